"""kvm-clone's YAML configuration: where it lives, loading, saving, environment overrides and
the commented default file.

The schema (sections, settings, defaults, validation) is in :mod:`config_schema` and dotted-key
access (``ssh.connect_timeout``, ``hosts.alpha.uri``) in :mod:`config_keys`; their public names
are re-exported here, so ``from kvm_clone_tui.api.config import ...`` is all callers need.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import textwrap
from collections.abc import Mapping
from dataclasses import Field, replace
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from kvm_clone_tui.api.config_keys import config_keys, get_key, set_key, unset_key
from kvm_clone_tui.api.config_schema import (
    SECTIONS,
    TOP_LEVEL_KEYS,
    CloneConfig,
    CompressMode,
    Config,
    HostConfig,
    HostKeyPolicy,
    SSHConfig,
    SyncConfig,
    SyncMode,
    TransferMode,
)
from kvm_clone_tui.api.config_values import (
    ConfigError,
    parse_bandwidth,
    settings,
    socket_from_uri,
    unknown_key,
    value_from_text,
    with_value,
)
from kvm_clone_tui.api.validation import ValidationError, validate_host_name

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_HOSTS_ENV",
    "CloneConfig",
    "CompressMode",
    "Config",
    "ConfigError",
    "HostConfig",
    "HostKeyPolicy",
    "SSHConfig",
    "SyncConfig",
    "SyncMode",
    "TransferMode",
    "config_keys",
    "config_path",
    "config_text",
    "default_config_text",
    "env_variable",
    "get_key",
    "load_config",
    "parse_bandwidth",
    "save_config",
    "set_key",
    "socket_from_uri",
    "unset_key",
    "write_atomically",
]

CONFIG_ENV = "KVM_CLONE_CONFIG"
ENV_PREFIX = "KVM_CLONE_"
DEFAULT_HOSTS_ENV = "KVM_CLONE_DEFAULT_HOSTS"


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$KVM_CLONE_CONFIG`` if set, else ``config.yaml`` in the user's config directory."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    return platformdirs.user_config_path("kvm-clone") / "config.yaml"


def env_variable(key: str) -> str:
    """The variable overriding a dotted key: ``ssh.connect_timeout`` -> ``KVM_CLONE_SSH_...``."""
    return ENV_PREFIX + key.replace(".", "_").replace("-", "_").upper()


# -- YAML ----------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (only true/false: ``on``, ``no`` stay strings) that
    refuses duplicate keys."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Any:
    seen: list[object] = []
    for key_node, _value in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.append(key)
    yield from loader.construct_yaml_map(node)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", source=source) from None


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


# -- building a Config from plain data -----------------------------------------------------------


def _section(cls: type[Any], data: object, prefix: str, source: str | None) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping of keys (got {data!r})", key=prefix, source=source)
    names = [f.name for f in settings(cls)]
    for key in data:
        if key not in names:
            candidates = [f"{prefix}.{name}" for name in names]
            raise ConfigError(
                unknown_key(f"{prefix}.{key}", candidates), key=f"{prefix}.{key}", source=source
            )
    try:
        return cls(**data)
    except ConfigError as exc:
        raise exc.within(prefix, source) from None


def _config_from_data(data: object, source: str | None) -> Config:
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping of keys (got {data!r})", source=source)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                unknown_key(str(key), list(TOP_LEVEL_KEYS)), key=str(key), source=source
            )
    raw_hosts = data.get("hosts") or {}
    if not isinstance(raw_hosts, dict):
        raise ConfigError(
            f"must be a mapping of host names to settings (got {raw_hosts!r})",
            key="hosts",
            source=source,
        )
    hosts: dict[str, HostConfig] = {}
    for name, values in raw_hosts.items():
        if not isinstance(name, str):
            raise ConfigError(
                f"host names must be strings (got {name!r})", key="hosts", source=source
            )
        try:
            validate_host_name(name)
        except ValidationError as exc:
            raise ConfigError(str(exc), key="hosts", source=source) from None
        hosts[name] = _section(HostConfig, values, f"hosts.{name}", source)
    sections = {name: _section(cls, data.get(name), name, source) for name, cls in SECTIONS.items()}
    default_hosts = data.get("default_hosts")
    try:
        return Config(
            default_hosts=() if default_hosts is None else default_hosts, hosts=hosts, **sections
        )
    except ConfigError as exc:
        raise exc.within(source=source) from None


def _apply_env(config: Config, environ: Mapping[str, str]) -> Config:
    known: dict[str, tuple[str, Field[Any]]] = {
        env_variable(f"{section}.{f.name}"): (section, f)
        for section, cls in SECTIONS.items()
        for f in settings(cls)
    }
    prefixes = tuple(env_variable(f"{section}.") for section in SECTIONS)
    sources = dict(config.sources)
    for variable in sorted(environ):
        if variable.startswith(prefixes) and variable not in known:
            matches = difflib.get_close_matches(variable, sorted(known), n=3, cutoff=0.6)
            hint = (
                f"did you mean {' or '.join(matches)}?"
                if matches
                else "the variables are KVM_CLONE_<SECTION>_<KEY> for the ssh, clone and sync keys"
            )
            raise ConfigError(
                f"unknown variable; {hint}", source=f"environment variable {variable}"
            )
    for variable, (section, f) in known.items():
        if variable not in environ:
            continue
        key = f"{section}.{f.name}"
        try:
            updated = with_value(
                getattr(config, section), f.name, value_from_text(f, environ[variable])
            )
        except ConfigError as exc:
            raise ConfigError(
                exc.problem, key=key, source=f"environment variable {variable}"
            ) from None
        config = with_value(config, section, updated)
        sources[key] = variable
    if DEFAULT_HOSTS_ENV in environ:
        try:
            config = with_value(config, "default_hosts", environ[DEFAULT_HOSTS_ENV])
        except ConfigError as exc:
            raise exc.within(source=f"environment variable {DEFAULT_HOSTS_ENV}") from None
        sources["default_hosts"] = DEFAULT_HOSTS_ENV
    return replace(config, sources=sources)


# -- load and save -------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the configuration (missing or empty file: defaults) and apply the environment.

    ``path`` defaults to :func:`config_path`. ``environ`` is where the overrides are read
    (default ``os.environ``); pass ``{}`` to read the file alone (as ``config set`` does before
    saving). Raises :class:`ConfigError` naming the file, the dotted key or the variable, and the
    problem.
    """
    env = os.environ if environ is None else environ
    file = Path(path) if path is not None else config_path()
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        data: object = None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", source=source) from None
    else:
        data = _parse_yaml(text, source)
    return _apply_env(_config_from_data(data, source), env)


SAVED_HEADER = """\
# kvm-clone configuration, written by kvm-clone. Only values that differ from the defaults are
# listed; `kvm-clone config show` prints every value and `kvm-clone config --help` every key.
"""


def config_text(config: Config) -> str:
    """The YAML that :func:`save_config` writes: the non-default values, in schema order."""
    values = config.to_dict(defaults=False)
    return SAVED_HEADER + (_dump(values) if values else "")


def save_config(config: Config, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``config`` atomically (creating the directory) and return the file's path.

    Refuses a configuration holding values from the environment (``config.sources``), which would
    otherwise be written to the file: load it with ``environ={}`` first.
    """
    if config.sources:
        variables = ", ".join(sorted(set(config.sources.values())))
        raise ConfigError(
            f"not saving values that come from the environment ({variables}); "
            "load the file with environ={} to change it"
        )
    file = Path(path) if path is not None else config_path()
    write_atomically(file, config_text(config))
    return file


def write_atomically(file: Path, text: str) -> None:
    """Replace ``file`` with ``text`` in one step, keeping its permissions if it exists."""
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = file.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    temporary = file.with_name(f".{file.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            if mode is not None:
                os.fchmod(stream.fileno(), mode)
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, file)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# -- the commented default file (`config init`, config.example.yaml) -----------------------------

_HEADER = f"""\
# kvm-clone configuration.
#
# Where kvm-clone reads it: ${CONFIG_ENV} if set, else config.yaml in the user's configuration
# directory (`kvm-clone config path` prints it). Every value below is the default: delete a key,
# or run `kvm-clone config unset KEY`, to go back to it. `kvm-clone config show` prints the values
# in effect.
#
# Environment variables override this file: KVM_CLONE_<SECTION>_<KEY> for the ssh, clone and sync
# settings (KVM_CLONE_SSH_HOST_KEY_POLICY=accept-new, KVM_CLONE_CLONE_PARALLEL=4,
# KVM_CLONE_SYNC_MODE=hash, KVM_CLONE_SSH_USER=ops, KVM_CLONE_SSH_KEY_PATH=~/.ssh/id_ops) and
# {DEFAULT_HOSTS_ENV}=alpha,beta. Logs: KVM_CLONE_LOG_FORMAT=json (one JSON object per event) and
# KVM_CLONE_LOG_FILE=PATH, or --log-format and --log-file on any command.
"""

_SECTION_HELP = {
    "ssh": "How kvm-clone connects to hosts.",
    "clone": "Defaults for `kvm-clone clone` options.",
    "sync": "Defaults for `kvm-clone sync`.",
}


def _comment(text: str, indent: str = "") -> list[str]:
    lines = textwrap.wrap(text, 98 - len(indent), break_on_hyphens=False)
    return [f"{indent}# {line}" for line in lines]


def _sentence(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}."


def _scalar_line(key: str, value: object, indent: str = "") -> str:
    style = None if isinstance(value, (list, tuple)) else False
    dumped = yaml.safe_dump(
        {key: list(value) if isinstance(value, tuple) else value},
        default_flow_style=style,
        allow_unicode=True,
    )
    return indent + dumped.strip()


def default_config_text() -> str:
    """A complete configuration file holding the defaults, every key explained in a comment."""
    top = {f.name: f for f in settings(Config)}
    lines = [*_HEADER.splitlines(), ""]
    lines += _comment(_sentence(top["default_hosts"].metadata["help"]))
    lines += [_scalar_line("default_hosts", ()), ""]
    lines += _comment(
        f"{_sentence(top['hosts'].metadata['help'])} Every setting is optional; for example:"
    )
    lines += ["#", "#   hosts:", "#     alpha:"]
    for f in settings(HostConfig):
        lines += _comment(f.metadata["help"], "#       ")
        lines.append("#       " + _scalar_line(f.name, f.metadata["example"]))
    lines.append("hosts: {}")
    for section, cls in SECTIONS.items():
        lines += ["", *_comment(_SECTION_HELP[section]), f"{section}:"]
        for f in settings(cls):
            lines += _comment(f.metadata["help"], "  ")
            lines.append(_scalar_line(f.name, f.default, "  "))
    return "\n".join(lines) + "\n"
