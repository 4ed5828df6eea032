"""The command line's shape: help, version, and commands that are not available yet."""

from __future__ import annotations

import pytest

from kvm_clone_tui import __version__
from kvm_clone_tui.cli.main import PENDING, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(PENDING))
def test_pending_commands_refuse_instead_of_pretending(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command]) == 2
    assert "not available yet" in capsys.readouterr().err


def test_lab_help_teaches_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
    out = capsys.readouterr().out
    for word in ("up", "down", "status", "ssh", "KVM_CLONE_LAB_DIR"):
        assert word in out


def test_lab_ssh_refuses_unknown_host(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--dir", str(tmp_path), "ssh", "evil;touch /tmp/x"]) == 1
    assert "no lab host named" in capsys.readouterr().err
