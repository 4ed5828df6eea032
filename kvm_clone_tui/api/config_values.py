"""Parsing and checking configuration values: the converters every setting runs through.

A converter takes a value from YAML, the environment or the command line (often a string) and
returns it typed and checked, or raises ``ValueError`` with a message such as ``must be one of
strict, accept-new (got 'yes')``. :func:`normalise` turns that into a :class:`ConfigError`
naming the setting.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from kvm_clone_tui.api.validation import (
    parse_host_spec,
    validate_host_name,
    validate_remote_path,
)

log = logging.getLogger("kvm_clone_tui.config")

DEFAULT_URI = "qemu:///system"
DEFAULT_LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"
TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
_BANDWIDTH = re.compile(r"\s*([0-9]+)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
NULL_WORDS = frozenset({"", "null", "none", "~"})

Converter = Callable[[object], Any]

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    _D = TypeVar("_D", bound=DataclassInstance)


class ConfigError(Exception):
    """A configuration problem: ``source: key: problem`` (source and key when known)."""

    def __init__(self, problem: str, *, key: str | None = None, source: str | None = None):
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(": ".join(part for part in (source, key, problem) if part))

    def within(self, prefix: str | None = None, source: str | None = None) -> ConfigError:
        """The same error for a key nested under ``prefix`` and read from ``source``."""
        key = ".".join(part for part in (prefix, self.key) if part) or None
        return ConfigError(self.problem, key=key, source=source or self.source)


# -- converters: object -> validated value, raising ValueError with a readable message ----------


def optional(convert: Converter) -> Converter:
    """``convert``, letting null (and "") through as None."""

    def convert_optional(value: object) -> Any:
        return None if value is None or value == "" else convert(value)

    return convert_optional


def string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {value!r}); quote it in YAML")
    return value


def checked(check: Callable[[str], object]) -> Converter:
    def checked(value: object) -> str:
        text = string(value)
        check(text)
        return text

    return checked


def choice(*choices: str, aliases: Mapping[str, tuple[str, str]] | None = None) -> Converter:
    """One of ``choices``; ``aliases`` maps other accepted names to (choice, notice)."""
    known = dict(aliases or {})

    def choice(value: object) -> str:
        if isinstance(value, str) and value in choices:
            return value
        if isinstance(value, str) and value in known:
            chosen, notice = known[value]
            if value not in _NOTICED:  # once per process, however often the file is read
                _NOTICED.add(value)
                log.warning("%s", notice)
            return chosen
        raise ValueError(f"must be one of {', '.join(choices)} (got {value!r})")

    return choice


_NOTICED: set[str] = set()


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError(f"must be true or false (got {value!r})")


def integer(low: int, high: int) -> Converter:
    def integer(value: object) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            number = int(value)
        if number is None or not low <= number <= high:
            raise ValueError(f"must be an integer from {low} to {high} (got {value!r})")
        return number

    return integer


def seconds(*, zero_allowed: bool) -> Converter:
    bound = ">= 0" if zero_allowed else "> 0"

    def seconds(value: object) -> float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value) if re.fullmatch(r"\s*[0-9]+\s*", value) else float(value)
            except ValueError:
                number = None
        ok = number is not None and math.isfinite(number)
        if number is None or not ok or number < 0 or (number == 0 and not zero_allowed):
            raise ValueError(f"must be a number of seconds {bound} (got {value!r})")
        return number

    return seconds


def local_path(*, empty_allowed: bool) -> Converter:
    def local_path(value: object) -> str:
        text = string(value)
        if not text and empty_allowed:
            return text
        if not text or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"must be a file path (got {text!r})")
        if not (text.startswith("/") or text.startswith("~")):
            raise ValueError(f"must be an absolute path or start with ~ (got {text!r})")
        return text

    return local_path


def bare_host(value: object) -> str:
    text = string(value)
    spec = parse_host_spec(text)
    if spec.user is not None or spec.port is not None:
        raise ValueError(
            f"must be an address or alias alone, without user@ or :port (got {text!r}); "
            "use the user and port keys"
        )
    return text


def remote_path(value: object) -> str:
    return validate_remote_path(string(value))


def socket_from_uri(uri: str) -> str:
    """The libvirtd socket a ``qemu:///system[?socket=PATH]`` URI names; ValueError otherwise."""
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        raise ValueError(f"must be a libvirt URI such as {DEFAULT_URI} (got {uri!r})")
    parts = urlsplit(uri)
    if parts.scheme == "qemu" and not parts.netloc and parts.path == "/session":
        raise ValueError(
            f"{uri} is not supported: kvm-clone works with the system libvirtd ({DEFAULT_URI})"
        )
    if parts.scheme != "qemu" or parts.netloc or parts.path != "/system" or parts.fragment:
        hint = " (kvm-clone reaches the host over SSH itself)" if parts.netloc else ""
        raise ValueError(f"must be a local URI such as {DEFAULT_URI}{hint} (got {uri!r})")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    if set(query) - {"socket"} or len(query.get("socket", [])) > 1:
        raise ValueError(f"the only URI parameter understood is ?socket=PATH (got {uri!r})")
    if "socket" in query:
        return validate_remote_path(query["socket"][0])
    return DEFAULT_LIBVIRT_SOCKET


def libvirt_uri(value: object) -> str:
    text = string(value)
    socket_from_uri(text)
    return text


def parse_bandwidth(text: str) -> int:
    """Bytes per second from ``100M``, ``1G``, ``512K``, ``1000000`` (binary K/M/G/T)."""
    match = _BANDWIDTH.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"must be a positive number of bytes per second with an optional K, M, G or T "
            f"suffix, such as 100M (got {text!r})"
        )
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def bandwidth(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = string(value).strip()
    parse_bandwidth(text)
    return text


def host_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):  # from the environment or `config set`: "alpha,beta" or "[a, b]"
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items: list[object] = [item.strip() for item in text.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"must be a list of hosts (got {value!r})")
    hosts: list[str] = []
    for item in items:
        host = validate_host_name(string(item))
        if host in hosts:
            raise ValueError(f"lists {host!r} twice")
        hosts.append(host)
    return tuple(hosts)


def meta(
    convert: Converter, help: str, *, nullable: bool = False, example: object = None
) -> dict[str, Any]:
    """A setting's field metadata: its converter, help line and (for hosts) an example value."""
    if nullable:
        convert = optional(convert)
    return {"convert": convert, "help": help, "nullable": nullable, "example": example}


def settings(section: type[Any] | object) -> tuple[Field[Any], ...]:
    """The setting fields of a section class or object, in schema order."""
    return tuple(f for f in fields(section) if "convert" in f.metadata)  # type: ignore[arg-type]


def normalise(section: object) -> None:
    """Run every setting of a freshly built (frozen) section through its converter."""
    for f in settings(section):
        try:
            value = f.metadata["convert"](getattr(section, f.name))
        except ValueError as exc:  # ValidationError included
            raise ConfigError(str(exc), key=f.name) from None
        object.__setattr__(section, f.name, value)


def with_value(obj: _D, name: str, value: object) -> _D:
    """``dataclasses.replace`` for one field named at run time."""
    changes: dict[str, Any] = {name: value}
    return replace(obj, **changes)


def value_from_text(f: Field[Any], text: str) -> object:
    """A setting's value from command-line or environment text (converters parse the rest)."""
    if f.metadata["nullable"] and text.strip().lower() in NULL_WORDS:
        return None
    return text


def unknown_key(key: str, candidates: list[str], summary: list[str] | None = None) -> str:
    """The problem text for an unknown key: its close matches, else ``summary`` (or all keys)."""
    matches = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    if matches:
        return f"unknown key; did you mean {' or '.join(matches)}?"
    return f"unknown key; the keys are {', '.join(summary or candidates)}"
