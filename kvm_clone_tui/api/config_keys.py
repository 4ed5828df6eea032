"""Dotted-key access to a configuration: ``get_key(config, "ssh.connect_timeout")``,
``set_key(config, "hosts.alpha.uri", "qemu:///system")``, ``unset_key(config, "hosts.alpha")``.

Host names may hold dots (``hosts.10.0.0.5.port``): the last component is the setting when it
names one.
"""

from __future__ import annotations

import difflib
from dataclasses import Field, replace
from typing import Any

from kvm_clone_tui.api.config_schema import (
    SECTIONS,
    TOP_LEVEL_KEYS,
    Config,
    HostConfig,
    section_dict,
)
from kvm_clone_tui.api.config_values import (
    ConfigError,
    settings,
    unknown_key,
    value_from_text,
    with_value,
)
from kvm_clone_tui.api.validation import ValidationError, validate_host_name

_HOST_FIELDS = tuple(f.name for f in settings(HostConfig))


def config_keys() -> list[tuple[str, str]]:
    """Every dotted key (``hosts.NAME.*`` for host settings) with its help line, schema order."""
    top = {f.name: f for f in settings(Config)}
    keys = [("default_hosts", top["default_hosts"].metadata["help"])]
    keys += [(f"hosts.NAME.{f.name}", f.metadata["help"]) for f in settings(HostConfig)]
    for section, cls in SECTIONS.items():
        keys += [(f"{section}.{f.name}", f.metadata["help"]) for f in settings(cls)]
    return keys


def _candidates(config: Config) -> list[str]:
    keys = [key for key, _help in config_keys()] + list(TOP_LEVEL_KEYS)
    keys += [f"hosts.{name}.{field}" for name in config.hosts for field in _HOST_FIELDS]
    return keys


def _resolve(config: Config, key: str) -> tuple[str, str | None, str | None]:
    """Split a dotted key into (kind, name, setting); kind is top|section|field|host|hostfield."""
    head, _, rest = key.partition(".")
    if head == "default_hosts" and not rest:
        return "top", None, "default_hosts"
    if head in SECTIONS:
        if not rest:
            return "section", head, None
        if rest in {f.name for f in settings(SECTIONS[head])}:
            return "field", head, rest
    elif head == "hosts":
        if not rest:
            return "section", "hosts", None
        name, dot, last = rest.rpartition(".")
        if dot and last in _HOST_FIELDS:
            return "hostfield", _host_name(name, key), last
        looks_like_a_setting = dot and difflib.get_close_matches(last, _HOST_FIELDS, cutoff=0.7)
        if rest in config.hosts or not looks_like_a_setting:
            return "host", _host_name(rest, key), None
        candidates = [f"hosts.{name}.{field}" for field in _HOST_FIELDS]
        raise ConfigError(unknown_key(key, candidates), key=key)
    summary = ["default_hosts", "hosts.NAME.KEY", *(f"{name}.KEY" for name in SECTIONS)]
    raise ConfigError(unknown_key(key, _candidates(config), summary), key=key)


def _host_name(name: str, key: str) -> str:
    try:
        return validate_host_name(name)
    except ValidationError as exc:
        raise ConfigError(str(exc), key=key) from None


def get_key(config: Config, key: str) -> Any:
    """The value at a dotted key: a scalar, a list or (for a section or host) a mapping.

    An unconfigured host's settings are the defaults (as :meth:`Config.host` returns them).
    """
    kind, name, setting = _resolve(config, key)
    if kind == "top":
        return list(config.default_hosts)
    if kind == "section" and name == "hosts":
        return {host: section_dict(values) for host, values in config.hosts.items()}
    if kind == "section":
        return section_dict(getattr(config, str(name)))
    if kind == "host":
        return section_dict(config.host(str(name)))
    section = config.host(str(name)) if kind == "hostfield" else getattr(config, str(name))
    value = getattr(section, str(setting))
    return list(value) if isinstance(value, tuple) else value


def set_key(config: Config, key: str, value: str) -> Config:
    """A copy of ``config`` with the setting at ``key`` parsed from the text ``value``.

    ``hosts.NAME.SETTING`` creates the host's entry when needed. Raises :class:`ConfigError` for
    an unknown key, a section (only settings can be set) or a bad value.
    """
    kind, name, setting = _resolve(config, key)
    sources = {k: v for k, v in config.sources.items() if k != key}
    try:
        if kind == "top":
            return with_value(replace(config, sources=sources), "default_hosts", value)
        if kind == "field" and name and setting:
            section = getattr(config, name)
            updated = with_value(
                section, setting, value_from_text(_setting(section, setting), value)
            )
            return with_value(replace(config, sources=sources), name, updated)
        if kind == "hostfield" and name and setting:
            host = config.hosts.get(name, HostConfig())
            updated = with_value(host, setting, value_from_text(_setting(host, setting), value))
            return replace(config, hosts={**config.hosts, name: updated}, sources=sources)
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=key) from None
    example = {"section": f"{name}.KEY", "host": f"hosts.{name}.uri"}.get(kind, "")
    if name == "hosts" and kind == "section":
        example = "hosts.NAME.uri"
    raise ConfigError(
        f"is a section, not a setting; set one of its keys, such as {example}", key=key
    )


def unset_key(config: Config, key: str) -> Config:
    """A copy of ``config`` with ``key`` back at its default (``hosts.NAME`` removes the host,
    ``hosts`` every host, a section name the whole section). Unsetting what is not set is a
    no-op."""
    kind, name, setting = _resolve(config, key)
    sources = {k: v for k, v in config.sources.items() if k != key and not k.startswith(key + ".")}
    config = replace(config, sources=sources)
    if kind == "top":
        return replace(config, default_hosts=())
    if kind == "section" and name == "hosts":
        return replace(config, hosts={})
    if kind == "section" and name:
        return with_value(config, name, SECTIONS[name]())
    if kind == "host":
        return replace(config, hosts={h: v for h, v in config.hosts.items() if h != name})
    if kind == "field" and name and setting:
        section = getattr(config, name)
        return with_value(
            config, name, with_value(section, setting, _setting(section, setting).default)
        )
    if name is not None and name in config.hosts and setting:
        host = config.hosts[name]
        updated = with_value(host, setting, _setting(host, setting).default)
        return replace(config, hosts={**config.hosts, name: updated})
    return config


def _setting(section: object, name: str) -> Field[Any]:
    return next(f for f in settings(section) if f.name == name)
