"""The original kvm-clone README's interface works as written, on the lab's real hosts.

Each test is one row of the table in issue 16: the original's flags, environment variables and
(once the API speaks it) its Python example.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import domain_names


def run_cli(
    lab: Lab, *args: str, config: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``kvm-clone ARGS`` with the lab's config (or ``config``), no SSH agent, ``env`` added."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KVM_CLONE_SSH", "SSH_"))}
    environ.update(KVM_CLONE_CONFIG=str(config or lab.layout.client_config), **env)
    return subprocess.run(
        [sys.executable, "-m", "kvm_clone_tui", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def own_config(tmp_path: Path, lab: Lab, ssh_config: str, known_hosts: Path | None = None) -> Path:
    """A kvm-clone config whose ssh config is ``ssh_config`` (text), in ``tmp_path``."""
    (tmp_path / "ssh_config").write_text(ssh_config)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"ssh:\n  config_file: {tmp_path / 'ssh_config'}\n"
        f"  known_hosts: {known_hosts or lab.layout.known_hosts}\n"
    )
    return config


def test_clone_with_compress_and_verify_as_the_original_wrote_it(
    lab: Lab, clean_beta: LabHostRuntime
) -> None:
    done = run_cli(
        lab, "clone", "alpha", "beta", "web01", "--new-name", "web01-orig", "--compress", "--verify"
    )
    assert done.returncode == 0, done.stderr
    assert "web01-orig" in domain_names(clean_beta)
    plan = run_cli(lab, "clone", "alpha", "beta", "web01", "--compress", "--dry-run", "-o", "json")
    assert json.loads(plan.stdout)["plan"]["options"]["compress"] == "on"  # alone: on
    both = run_cli(lab, "clone", "alpha", "beta", "web01", "--verify", "--no-verify")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_list_format_json_is_output_json(lab: Lab) -> None:
    done = run_cli(lab, "list", "alpha", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["schema"] == 1 and "web01" in {vm["name"] for vm in data["hosts"][0]["vms"]}


def test_config_list_prints_the_values_in_effect(lab: Lab) -> None:
    done = run_cli(lab, "config", "list", "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ssh"]["known_hosts"] == str(lab.layout.known_hosts)


def test_auto_add_records_a_new_host_and_says_what_it_means(lab: Lab, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    lab_ssh = lab.layout.ssh_config.read_text().replace(str(lab.layout.known_hosts), str(known))
    config = own_config(tmp_path, lab, lab_ssh, known_hosts=known)
    strict = run_cli(lab, "list", "gamma", config=config)
    assert strict.returncode == 1 and "is not in" in strict.stdout + strict.stderr
    done = run_cli(lab, "list", "gamma", config=config, KVM_CLONE_SSH_HOST_KEY_POLICY="auto_add")
    assert done.returncode == 0, done.stderr
    assert "auto_add (the original kvm-clone's name) means accept-new" in done.stderr
    assert lab.runtime("gamma").host_public_key().split()[1] in known.read_text()


def test_key_path_is_offered_after_the_ssh_configs_identities(lab: Lab, tmp_path: Path) -> None:
    alpha = lab.runtime("alpha").host
    bare = f"Host alpha\n    HostName {alpha.address}\n    User root\n    IdentitiesOnly yes\n"
    config = own_config(tmp_path, lab, bare)
    home = {"HOME": str(tmp_path)}  # no ~/.ssh/id_* of the machine's to fall back on
    assert run_cli(lab, "list", "alpha", config=config, **home).returncode == 1
    key = str(lab.layout.root / "id_ed25519")
    done = run_cli(lab, "list", "alpha", config=config, KVM_CLONE_SSH_KEY_PATH=key, **home)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_user_comes_from_ssh_config_then_environment_then_login(
    lab: Lab, tmp_path: Path
) -> None:
    alpha = lab.runtime("alpha").host
    key = lab.layout.root / "id_ed25519"
    entry = f"Host alpha\n    HostName {alpha.address}\n    IdentityFile {key}\n"
    (tmp_path / "a").mkdir()
    no_user = own_config(tmp_path / "a", lab, entry)
    # No User in the ssh config: the environment's user is the one that logs in.
    refused = run_cli(lab, "list", "alpha", config=no_user, KVM_CLONE_SSH_USER="nobody")
    assert refused.returncode == 1 and "nobody" in refused.stdout + refused.stderr
    assert run_cli(lab, "list", "alpha", config=no_user, KVM_CLONE_SSH_USER="root").returncode == 0
    # The ssh config's User wins over the environment.
    (tmp_path / "b").mkdir()
    with_user = own_config(tmp_path / "b", lab, entry + "    User root\n")
    done = run_cli(lab, "list", "alpha", config=with_user, KVM_CLONE_SSH_USER="nobody")
    assert done.returncode == 0, done.stdout + done.stderr


def test_json_logs_carry_every_event_of_a_clone(
    lab: Lab, clean_beta: LabHostRuntime, tmp_path: Path
) -> None:
    log = tmp_path / "clone.log"
    done = run_cli(
        lab, "--log-format", "json", "clone", "alpha", "beta", "web01",
        "--new-name", "web01-logged", "--log-file", str(log),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [line["step"] for line in lines if "step" in line]
    assert steps[0] == "stage" and steps[-1] == "done" and {"copy", "commit"} <= set(steps)
    done_line = next(line for line in lines if line.get("step") == "done")
    assert done_line["level"] == "info" and done_line["host"] == "beta"
    assert done_line["source"] == "alpha" and done_line["vm"] == "web01"
    assert done_line["timestamp"].endswith("Z") and done_line["job"]
    copied = [line for line in lines if line.get("step") == "copy"]
    assert copied[-1]["bytes_done"] == sum(d["total"] for d in copied[-1]["disks"]) > 0
    # The environment sets the format for every command; list logs each host it read.
    listed = run_cli(lab, "list", "alpha", "root@127.0.0.99", KVM_CLONE_LOG_FORMAT="json")
    assert listed.returncode == 1
    events = [json.loads(line) for line in listed.stderr.splitlines() if line.startswith("{")]
    assert any(e["logger"] == "kvm_clone_tui.engine.ssh" for e in events)  # the retries
    assert [(e["host"], e["level"]) for e in events if "command" in e] == [
        ("alpha", "info"),
        ("root@127.0.0.99", "error"),
    ]


@pytest.mark.parametrize("flag", ["--log-format=yaml"])
def test_a_bad_log_format_is_a_usage_error(lab: Lab, flag: str) -> None:
    done = run_cli(lab, flag, "list", "alpha")
    assert done.returncode == 2 and "invalid choice" in done.stderr


# The original README's Python example, as written there but for the package's name (theirs was
# kvm_clone) and the hosts and VM, which are the lab's.
ORIGINAL_EXAMPLE = """\
import asyncio
from kvm_clone_tui import KVMCloneClient, CloneOptions

async def clone_vm():
    async with KVMCloneClient() as client:
        result = await client.clone_vm(
            source_host="alpha",
            dest_host="beta",
            vm_name="VM",
            new_name="NEW",
            compress=True,
            verify=True
        )

        if result.success:
            print(f"Successfully cloned VM: {result.new_vm_name}")
        else:
            print(f"Clone failed: {result.error}")

# Run the async function
asyncio.run(clone_vm())
"""


def run_example(lab: Lab, tmp_path: Path, vm: str, new: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(ORIGINAL_EXAMPLE.replace('"VM"', f'"{vm}"').replace('"NEW"', f'"{new}"'))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    environ["KVM_CLONE_CONFIG"] = str(lab.layout.client_config)
    return subprocess.run(
        [sys.executable, str(script)], env=environ, capture_output=True, text=True, timeout=300
    )


def test_the_original_python_example_runs_as_written(
    lab: Lab, clean_beta: LabHostRuntime, tmp_path: Path
) -> None:
    done = run_example(lab, tmp_path, "web01", "my-vm-clone")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Successfully cloned VM: my-vm-clone\n"
    assert "my-vm-clone" in domain_names(clean_beta)
    # A refused clone is a result too, with the plan's reason: the same name again.
    again = run_example(lab, tmp_path, "web01", "my-vm-clone")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Clone failed: ") and "my-vm-clone" in again.stdout
