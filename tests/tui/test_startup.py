"""Which hosts and configuration the UI opens with."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvm_clone_tui.api.config import ConfigError
from kvm_clone_tui.api.validation import ValidationError
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.tui.startup import resolve_startup, running_lab_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_arguments_win(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "default_hosts: [alpha]\n")
    startup = resolve_startup(["beta", "root@10.0.0.5:2222"], config, environ={})
    assert startup.hosts == ("beta", "root@10.0.0.5:2222") and startup.origin == "arguments"


def test_then_default_hosts(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "default_hosts: [alpha, beta]\n")
    startup = resolve_startup([], config, environ={})
    assert startup.hosts == ("alpha", "beta") and startup.origin == "default_hosts"
    assert startup.config_file == config


def test_a_named_config_without_hosts_never_falls_back_to_the_lab(tmp_path: Path, lab: Lab) -> None:
    config = write(tmp_path / "c.yaml", "")
    startup = resolve_startup([], config, environ={}, lab_dir=lab.layout.root)
    assert startup.hosts == () and startup.origin == "none"


def test_then_the_running_lab(tmp_path: Path, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no user config file there
    startup = resolve_startup([], None, environ={}, lab_dir=lab.layout.root)
    assert startup.origin == "lab" and startup.config_file == lab.layout.client_config
    assert startup.hosts == ("alpha", "beta", "gamma")
    assert startup.config.ssh.known_hosts_path == lab.layout.known_hosts


def test_no_lab_no_hosts(tmp_path: Path) -> None:
    assert running_lab_config(tmp_path / "no-lab") is None
    startup = resolve_startup(
        [], None, environ={"KVM_CLONE_CONFIG": str(tmp_path / "none.yaml")}, lab_dir=tmp_path
    )
    assert startup.hosts == () and startup.origin == "none"


def test_hostile_hosts_and_bad_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        resolve_startup(["-oProxyCommand=x"], None, environ={})
    bad = write(tmp_path / "bad.yaml", "ssh: [\n")
    with pytest.raises(ConfigError):
        resolve_startup([], bad, environ={})
