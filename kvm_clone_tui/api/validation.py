"""Validation of every name that reaches a remote shell, an SSH command line or libvirt XML.

Each ``validate_*`` function returns its argument unchanged when it is acceptable and raises
:class:`ValidationError` naming the value and what is wrong with it otherwise. They run before
any connection is opened, so a hostile name never gets near a shell.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

MAX_NAME_BYTES = 255
MAX_HOST_CHARS = 253  # the longest DNS name

# Characters a POSIX shell gives a meaning to. Brackets are listed too: they are only allowed
# around an IPv6 literal (``[::1]:22``), which parse_host_spec recognises by position.
SHELL_METACHARACTERS = frozenset(";|&$`<>()'\"\\*?!{}[]~#")
_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_USER_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_PORT = re.compile(r"[0-9]+")
# Unicode categories refused in names: controls, invisible format characters (bidi overrides,
# zero-width joiners), surrogates, and line/paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class ValidationError(ValueError):
    """A name or path that kvm-clone refuses to pass on."""


@dataclass(frozen=True)
class HostSpec:
    """A parsed ``[user@]host[:port]`` (``host`` holds an IPv6 address without brackets)."""

    user: str | None
    host: str
    port: int | None
    original: str

    def __str__(self) -> str:
        return self.original


def _bad_character(text: str) -> str | None:
    """Describe the first control or invisible character in ``text``, if any."""
    for char in text:
        if unicodedata.category(char) in _BAD_CATEGORIES:
            return f"contains the control or invisible character U+{ord(char):04X}"
    return None


def _check_libvirt_name(kind: str, name: object) -> str:
    if not isinstance(name, str):
        raise ValidationError(f"bad {kind}: must be a string, not {type(name).__name__}")
    if not name:
        raise ValidationError(f"bad {kind}: it is empty")
    problem = _bad_character(name)
    if problem is None and "/" in name:
        problem = "contains '/'"
    if problem is None and name.startswith("-"):
        problem = "starts with '-' (it could be read as an option)"
    if problem is None and name in (".", ".."):
        problem = "is not a name"
    if problem is None:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates are caught above; belt and braces
            size = MAX_NAME_BYTES + 1
        if size > MAX_NAME_BYTES:
            problem = f"is {size} bytes long in UTF-8 (at most {MAX_NAME_BYTES})"
    if problem is not None:
        raise ValidationError(f"bad {kind} {name!r}: {problem}")
    return name


def validate_vm_name(name: str) -> str:
    """Accept what libvirt accepts for a domain name (dots, spaces, unicode), minus the hazards.

    Refused: empty, over 255 UTF-8 bytes, '/', control or invisible characters (newline, tab,
    NUL, bidi overrides, ...), a leading '-', and the names '.' and '..'.
    """
    return _check_libvirt_name("VM name", name)


def validate_pool_name(name: str) -> str:
    """Check a libvirt storage pool name with the same rules as :func:`validate_vm_name`."""
    return _check_libvirt_name("pool name", name)


def _host_problem(spec: str) -> str | None:
    """The first character-level problem of a host spec, before its structure is parsed."""
    problem = _bad_character(spec)
    if problem is not None:
        return problem
    for char in spec:
        if char.isspace():
            return "contains whitespace"
        if char == "/":
            return "contains '/'"
        if char in SHELL_METACHARACTERS and char not in "[]":
            return f"contains the shell metacharacter {char!r}"
    return None


def _check_user(user: str) -> str | None:
    if not user:
        return "the user is empty"
    if user.startswith("-"):
        return "the user starts with '-' (it could be read as an option)"
    if not _USER_CHARS.fullmatch(user):
        bad = next(c for c in user if not _USER_CHARS.fullmatch(c))
        return f"the user contains {bad!r}; it may only hold letters, digits, '.', '-' and '_'"
    return None


def _check_plain_host(host: str) -> str | None:
    if not host:
        return "the host is empty"
    if host.startswith("-"):
        return "the host starts with '-' (it could be read as an option)"
    if "[" in host or "]" in host:
        return "brackets are only allowed around an IPv6 address, as in [::1]:22"
    if "%" in host:
        return "'%' is only allowed in an IPv6 address"
    if not _HOST_CHARS.fullmatch(host):
        bad = next(c for c in host if not _HOST_CHARS.fullmatch(c))
        return f"contains {bad!r}; a host may only hold letters, digits, '.', '-' and '_'"
    if len(host) > MAX_HOST_CHARS:
        return f"the host is {len(host)} characters long (at most {MAX_HOST_CHARS})"
    return None


def _check_ipv6(address: str) -> str | None:
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return f"{address!r} is not an IPv6 address"
    return None


def _parse_port(text: str) -> tuple[int | None, str | None]:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        return None, f"the port must be a number from 1 to 65535 (got {text!r})"
    return int(text), None


def parse_host_spec(spec: str) -> HostSpec:
    """Parse ``[user@]host[:port]``, ``[user@][v6]:port``, a bare IPv6 address or an ssh alias.

    Raises :class:`ValidationError` for anything that could be mistaken for an option or shell
    syntax, and for an empty user or host or a port outside 1-65535.
    """
    if not isinstance(spec, str):
        raise ValidationError(f"bad host: must be a string, not {type(spec).__name__}")

    def fail(problem: str) -> ValidationError:
        return ValidationError(f"bad host {spec!r}: {problem}")

    if not spec:
        raise ValidationError("bad host: it is empty")
    if spec.startswith("-"):
        raise fail("starts with '-' (it could be read as an option)")
    problem = _host_problem(spec)
    if problem is not None:
        raise fail(problem)

    user: str | None = None
    rest = spec
    if "@" in spec:
        user, _, rest = spec.partition("@")
        if "@" in rest:
            raise fail("holds more than one '@'")
        problem = _check_user(user)
        if problem is not None:
            raise fail(problem)

    port: int | None = None
    if rest.startswith("["):
        address, closing, after = rest[1:].partition("]")
        if not closing:
            raise fail("'[' without its ']'")
        problem = _check_ipv6(address) if address else "the host is empty"
        if problem is None and after:
            if not after.startswith(":"):
                problem = f"unexpected {after!r} after the IPv6 address"
            else:
                port, problem = _parse_port(after[1:])
        host = address
    elif rest.count(":") > 1:
        host = rest
        problem = _check_ipv6(rest)
        if problem is not None:
            problem += " (write an IPv6 address with a port as [address]:port)"
    else:
        host, colon, port_text = rest.partition(":")
        problem = _check_plain_host(host)
        if problem is None and colon:
            port, problem = _parse_port(port_text)
    if problem is not None:
        raise fail(problem)
    return HostSpec(user=user, host=host, port=port, original=spec)


def validate_user_name(user: str) -> str:
    """Check an SSH user name: letters, digits, '.', '-', '_', not starting with '-'."""
    if not isinstance(user, str):
        raise ValidationError(f"bad user: must be a string, not {type(user).__name__}")
    problem = _check_user(user)
    if problem is not None:
        raise ValidationError(f"bad user {user!r}: {problem.replace('the user ', 'it ', 1)}")
    return user


def validate_host_name(host: str) -> str:
    """Check a host argument (``[user@]host[:port]`` or ssh alias); see :func:`parse_host_spec`."""
    parse_host_spec(host)
    return host


def validate_remote_path(path: str, *, under: str | None = None) -> str:
    """Check an absolute, normalised remote path, and that it lies inside ``under`` if given.

    Refused: relative paths, '.' or '..' components, '//' or a trailing '/', control characters.
    """
    if not isinstance(path, str):
        raise ValidationError(f"bad path: must be a string, not {type(path).__name__}")

    def fail(problem: str) -> ValidationError:
        return ValidationError(f"bad path {path!r}: {problem}")

    if not path:
        raise ValidationError("bad path: it is empty")
    problem = _bad_character(path)
    if problem is not None:
        raise fail(problem)
    if not path.startswith("/"):
        raise fail("not absolute")
    components = path.split("/")[1:]
    if ".." in components:
        raise fail("holds a '..' component")
    if "." in components:
        raise fail("holds a '.' component")
    if "//" in path:
        raise fail("holds '//'")
    if path != "/" and path.endswith("/"):
        raise fail("ends with '/'")
    if posixpath.normpath(path) != path:  # pragma: no cover - the checks above cover normpath
        raise fail("is not normalised")
    if under is not None:
        root = under.rstrip("/") or "/" if isinstance(under, str) else under
        try:
            validate_remote_path(root)
        except ValidationError as exc:
            raise ValidationError(f"bad base directory {under!r}: {exc}") from None
        if root != "/" and path != root and not path.startswith(root + "/"):
            raise fail(f"is not inside {root}")
    return path


def shell_quote_argv(argv: Sequence[str]) -> str:
    """Join arguments into one POSIX shell command line, each quoted with :func:`shlex.quote`."""
    if isinstance(argv, str):
        raise TypeError("shell_quote_argv takes a sequence of arguments, not a string")
    for arg in argv:
        if "\0" in arg:
            raise ValidationError(f"bad argument {arg!r}: contains NUL")
    return " ".join(shlex.quote(arg) for arg in argv)
