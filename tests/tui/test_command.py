"""``kvm-clone tui`` and plain ``kvm-clone``: arguments, config, and refusals before the UI."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvm_clone_tui.cli.main import main
from kvm_clone_tui.tui.app import KVMCloneApp


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[KVMCloneApp]:
    """Apps that the command would have run (they are not started)."""
    apps: list[KVMCloneApp] = []
    monkeypatch.setattr(KVMCloneApp, "run", lambda self, *a, **k: apps.append(self))
    return apps


def test_plain_kvm_clone_opens_the_ui_with_the_default_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened: list[KVMCloneApp]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("default_hosts: [alpha, root@10.0.0.5]\n")
    monkeypatch.setenv("KVM_CLONE_CONFIG", str(config))
    assert main([]) == 0
    assert opened[0].initial_hosts == ("alpha", "root@10.0.0.5")


def test_tui_hosts_and_config_option(tmp_path: Path, opened: list[KVMCloneApp]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("default_hosts: [alpha]\nssh:\n  connect_timeout: 3\n")
    assert main(["tui", "--config", str(config), "beta", "gamma"]) == 0
    app = opened[0]
    assert app.initial_hosts == ("beta", "gamma")
    assert app._own_client is not None and app._own_client.config.ssh.connect_timeout == 3


def test_tui_refuses_hostile_hosts_and_bad_configs(
    tmp_path: Path, opened: list[KVMCloneApp], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tui", "--", "-oProxyCommand=touch /tmp/x"]) == 2
    assert "kvm-clone tui: error: bad host" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("ssh: {connect_timeout: -1}\n")
    assert main(["tui", "--config", str(bad)]) == 2
    assert "ssh.connect_timeout" in capsys.readouterr().err
    assert opened == []
