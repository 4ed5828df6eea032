"""The command line's shape: help, version, and commands that are not available yet."""

from __future__ import annotations

import pytest

from kvm_clone_tui import __version__
from kvm_clone_tui.cli.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", ["tui", "list", "clone", "sync", "recover", "config", "lab"])
def test_every_command_teaches_its_use(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: kvm-clone {command}" in out and len(out) > 300


def test_lab_help_teaches_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
    out = capsys.readouterr().out
    for word in ("up", "down", "status", "ssh", "KVM_CLONE_LAB_DIR"):
        assert word in out


def test_lab_ssh_refuses_unknown_host(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--dir", str(tmp_path), "ssh", "evil;touch /tmp/x"]) == 1
    assert "no lab host named" in capsys.readouterr().err
