"""Which configuration and hosts the UI opens with.

Hosts come from the command line, else the configuration's ``default_hosts``, else, when no
configuration file was named and a local lab is up, the lab's hosts (with the lab's
configuration, which knows how to reach them); else none, and the UI says how to add one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvm_clone_tui.api.config import CONFIG_ENV, Config, config_path, load_config
from kvm_clone_tui.api.validation import parse_host_spec
from kvm_clone_tui.lab.layout import LabLayout, default_cache_dir, default_state_dir
from kvm_clone_tui.lab.manager import Lab


@dataclass(frozen=True)
class Startup:
    """The configuration in effect, the hosts to show, and where both came from."""

    config: Config
    config_file: Path
    hosts: tuple[str, ...]
    origin: str  # arguments | default_hosts | lab | none


def running_lab_config(state_dir: Path | None = None) -> Path | None:
    """The client configuration of the local lab when at least one of its hosts is up."""
    layout = LabLayout(state_dir if state_dir is not None else default_state_dir())
    if not layout.client_config.is_file():
        return None
    lab = Lab(layout, default_cache_dir())
    return layout.client_config if any(r.is_up() for r in lab.runtimes()) else None


def resolve_startup(
    hosts: Sequence[str],
    config_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    lab_dir: Path | None = None,
) -> Startup:
    """Work out the configuration and hosts; raises ConfigError or ValidationError."""
    env = os.environ if environ is None else environ
    for host in hosts:
        parse_host_spec(host)  # refuse hostile names before anything else
    path = Path(config_file).expanduser() if config_file is not None else config_path(env)
    config = load_config(path, environ=env)
    if hosts:
        return Startup(config, path, tuple(hosts), "arguments")
    if config.default_hosts:
        return Startup(config, path, tuple(config.default_hosts), "default_hosts")
    if config_file is None and not env.get(CONFIG_ENV):
        lab_config = running_lab_config(lab_dir)
        if lab_config is not None:
            config = load_config(lab_config, environ=env)
            if config.default_hosts:
                return Startup(config, lab_config, tuple(config.default_hosts), "lab")
    return Startup(config, path, (), "none")
