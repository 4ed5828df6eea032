"""``kvm-clone config``: show, create and change kvm-clone's YAML configuration."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import Any

from kvm_clone_tui.api.config import (
    CONFIG_ENV,
    Config,
    ConfigError,
    config_keys,
    config_path,
    default_config_text,
    env_variable,
    get_key,
    load_config,
    save_config,
    set_key,
    unset_key,
    write_atomically,
)
from kvm_clone_tui.cli.output import dump

DESCRIPTION = f"""\
Show or change kvm-clone's configuration: default hosts, per-host settings (address, user, port,
libvirt URI, default pool), SSH behaviour (host key policy, timeouts, retries) and the defaults of
`kvm-clone clone` and `kvm-clone sync`. The file is YAML, at ${CONFIG_ENV} if set, else in the
user's configuration directory (`kvm-clone config path`). A missing file means the defaults.
`set` and `unset` rewrite it with only the values that differ from the defaults (comments are not
kept); `init` writes a file with every key and its explanation.
"""


def _epilog() -> str:
    width = max(len(key) for key, _help in config_keys())
    keys = "\n".join(
        textwrap.fill(
            help,
            width=100,
            initial_indent=f"  {key:<{width}}  ",
            subsequent_indent=" " * (width + 4),
            break_on_hyphens=False,
        )
        for key, help in config_keys()
    )
    return f"""\
examples:
  kvm-clone config init                            a commented file holding the defaults
  kvm-clone config show                            every value in effect
  kvm-clone config show --output json
  kvm-clone config set default_hosts alpha,beta    hosts the TUI opens by default
  kvm-clone config set hosts.alpha.address 192.0.2.10
  kvm-clone config set hosts.alpha.user root
  kvm-clone config set ssh.host_key_policy accept-new
  kvm-clone config get clone.parallel
  kvm-clone config unset hosts.alpha               forget everything about alpha
  KVM_CLONE_CLONE_PARALLEL=4 kvm-clone config show  an environment override

keys (hosts.NAME: NAME as used on the command line, e.g. alpha or root@192.0.2.10:2222):
{keys}

environment:
  {CONFIG_ENV:<27}the configuration file (default: {config_path({})})
  {"KVM_CLONE_<SECTION>_<KEY>":<27}overrides an ssh.*, clone.* or sync.* key, e.g.
  {"":<27}{env_variable("ssh.host_key_policy")}=accept-new
  {env_variable("default_hosts"):<27}overrides default_hosts, e.g. alpha,beta

exit codes:
  0 success   1 bad key, bad value or unreadable file   2 bad usage
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``config`` and its subcommands."""
    parser = subparsers.add_parser(
        "config",
        help="show or change kvm-clone's configuration",
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="config_command", metavar="COMMAND", required=True)

    init = sub.add_parser(
        "init",
        help="write a commented configuration file holding the defaults",
        description="Write a configuration file with every key, its default and what it does.",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=_init)

    show = sub.add_parser(
        "show",
        aliases=["list"],
        help="print every value in effect (file + environment + defaults); also: list",
        description="Print the configuration in effect; environment overrides are noted on stderr.",
    )
    show.add_argument("--output", "-o", choices=("yaml", "json"), default="yaml")
    show.set_defaults(handler=_show)

    get = sub.add_parser(
        "get",
        help="print the value of one key",
        description="Print the value in effect at KEY (e.g. ssh.connect_timeout, hosts.alpha).",
    )
    get.add_argument("key", metavar="KEY")
    get.add_argument("--output", "-o", choices=("yaml", "json"), default="yaml")
    get.set_defaults(handler=_get)

    set_ = sub.add_parser(
        "set",
        help="change the value of one key in the file",
        description="Validate VALUE for KEY and save it. Lists are written alpha,beta; null "
        "clears an optional value.",
    )
    set_.add_argument("key", metavar="KEY")
    set_.add_argument("value", metavar="VALUE")
    set_.set_defaults(handler=_set)

    unset = sub.add_parser(
        "unset",
        help="put one key back to its default (hosts.NAME forgets a host)",
        description="Remove KEY from the file, so that its default applies again.",
    )
    unset.add_argument("key", metavar="KEY")
    unset.set_defaults(handler=_unset)

    path = sub.add_parser("path", help="print the configuration file's path")
    path.set_defaults(handler=_path)

    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``config`` subcommand; errors become a message and exit code 1."""
    try:
        code: int = args.handler(args)
        return code
    except ConfigError as exc:
        print(f"kvm-clone config: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"kvm-clone config: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def _note(message: str) -> None:
    print(f"kvm-clone config: note: {message}", file=sys.stderr)


def _format(value: Any, output: str) -> str:
    """A value for stdout: scalars bare (null, true, 10, qemu:///system), the rest as YAML/JSON."""
    if output == "json":
        return json.dumps(value, indent=2, ensure_ascii=False)
    if isinstance(value, (list, dict)):
        return dump(value, "yaml") if value else json.dumps(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _init(args: argparse.Namespace) -> int:
    file = config_path()
    if file.exists() and not args.force:
        raise ConfigError(f"{file} exists already; add --force to overwrite it")
    write_atomically(file, default_config_text())
    print(f"wrote {file}")
    return 0


def _show(args: argparse.Namespace) -> int:
    file = config_path()
    config = load_config(file)
    if not file.exists():
        _note(f"no file at {file}: these are the defaults (`kvm-clone config init` writes one)")
    _note_overrides(config)
    print(_format(config.to_dict(), args.output))
    return 0


def _note_overrides(config: Config) -> None:
    for key, variable in config.sources.items():
        _note(f"{key} comes from the environment ({variable})")


def _get(args: argparse.Namespace) -> int:
    print(_format(get_key(load_config(), args.key), args.output))
    return 0


def _set(args: argparse.Namespace) -> int:
    file = config_path()
    config = load_config(file, environ={})  # the environment's values must not reach the file
    save_config(set_key(config, args.key, args.value), file)
    _warn_if_overridden(args.key)
    return 0


def _unset(args: argparse.Namespace) -> int:
    file = config_path()
    config = load_config(file, environ={})
    updated = unset_key(config, args.key)
    if updated == config:
        _note(f"{args.key} was not set; nothing to change")
        return 0
    save_config(updated, file)
    _warn_if_overridden(args.key)
    return 0


def _warn_if_overridden(key: str) -> None:
    for setting, _help in config_keys():
        variable = env_variable(setting)
        if (setting == key or setting.startswith(key + ".")) and variable in os.environ:
            _note(f"{variable} is set and overrides {setting}")


def _path(args: argparse.Namespace) -> int:
    print(config_path())
    return 0
