"""The YAML configuration: loading, saving, validation, environment overrides, dotted keys, CLI."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from kvm_clone_tui.api.config import (
    CloneConfig,
    Config,
    ConfigError,
    HostConfig,
    SSHConfig,
    SyncConfig,
    config_keys,
    config_path,
    config_text,
    default_config_text,
    get_key,
    load_config,
    parse_bandwidth,
    save_config,
    set_key,
    unset_key,
)
from kvm_clone_tui.cli import config_cmd

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


@pytest.fixture
def cfg_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file path in a fresh directory, named by $KVM_CLONE_CONFIG; no other
    KVM_CLONE_* variable is set."""
    for name in list(os.environ):
        if name.startswith("KVM_CLONE_"):
            monkeypatch.delenv(name)
    path = tmp_path / "conf" / "config.yaml"
    monkeypatch.setenv("KVM_CLONE_CONFIG", str(path))
    return path


def load_text(path: Path, text: str, **env: str) -> Config:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=env)


def sample_config() -> Config:
    return Config(
        default_hosts=("alpha", "root@beta:2222"),
        hosts={
            "alpha": HostConfig(address="127.0.0.2", user="root", port=22, default_pool="fast"),
            "[::1]:2200": HostConfig(
                uri="qemu:///system?socket=/run/libvirt/virtqemud-sock",
                reach_address="10.0.0.7",
                ssh_config_host="lab-alpha",
            ),
            "empty": HostConfig(),
        },
        ssh=SSHConfig(host_key_policy="accept-new", connect_timeout=2.5, agent_forwarding=False),
        clone=CloneConfig(pool="images", parallel=4, bandwidth_limit="100M", compress="on"),
        sync=SyncConfig(mode="hash"),
    )


# -- location, defaults, the example -------------------------------------------------------------


def test_config_path_follows_the_environment(tmp_path: Path) -> None:
    assert config_path({"KVM_CLONE_CONFIG": str(tmp_path / "x.yaml")}) == tmp_path / "x.yaml"
    default = config_path({})
    assert default.name == "config.yaml"
    assert default.parent.name == "kvm-clone"


def test_defaults() -> None:
    config = Config()
    assert config.default_hosts == ()
    assert config.hosts == {}
    assert config.ssh.host_key_policy == "strict"
    assert config.ssh.connect_timeout == 10
    assert config.ssh.keepalive_interval == 15
    assert config.ssh.retry_delays == (1.0, 2.0, 4.0)
    assert config.ssh.agent_forwarding is True
    assert config.ssh.config_file_path == Path.home() / ".ssh" / "config"
    assert config.clone.parallel == 2
    assert config.clone.pool is None
    assert config.clone.bandwidth_limit_bytes is None
    assert config.clone.no_progress_timeout == 120
    assert config.sync.mode == "auto"
    host = config.host("anything")
    assert host.uri == "qemu:///system"
    assert host.socket_path == "/var/run/libvirt/libvirt-sock"
    assert host.default_pool == "default"


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "ssh:\nclone: ~\n"])
def test_empty_file_means_defaults(cfg_file: Path, text: str) -> None:
    assert load_text(cfg_file, text) == Config()


def test_missing_file_means_defaults(cfg_file: Path) -> None:
    assert not cfg_file.exists()
    assert load_config() == Config()


def test_example_file_loads_and_documents_every_key(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert load_config(EXAMPLE, environ={}) == Config()
    assert text == default_config_text(), (
        "config.example.yaml is stale: regenerate it with "
        "KVM_CLONE_CONFIG=config.example.yaml kvm-clone config init --force"
    )
    for key, _help in config_keys():
        assert f"{key.rsplit('.', 1)[-1]}:" in text, key
    # the commented-out host example is valid too
    example = "\n".join(line[1:] for line in text.splitlines() if line.startswith("#   "))
    hosts_file = tmp_path / "hosts.yaml"
    hosts_file.write_text(example, encoding="utf-8")
    alpha = load_config(hosts_file, environ={}).host("alpha")
    assert alpha.address == "192.0.2.10"
    assert alpha.ssh_config_host == "alpha"
    assert alpha.socket_path == "/var/run/libvirt/libvirt-sock"


# -- save and load -------------------------------------------------------------------------------


def test_save_load_round_trip(cfg_file: Path) -> None:
    config = sample_config()
    assert save_config(config) == cfg_file
    loaded = load_config(environ={})
    assert loaded == config
    assert loaded.hosts["[::1]:2200"].socket_path == "/run/libvirt/virtqemud-sock"
    assert list(loaded.hosts) == ["alpha", "[::1]:2200", "empty"]


def test_saved_file_is_sparse_readable_yaml_in_schema_order(cfg_file: Path) -> None:
    save_config(sample_config())
    text = cfg_file.read_text(encoding="utf-8")
    assert text.startswith("# kvm-clone configuration")
    data = yaml.safe_load(text)
    assert list(data) == ["default_hosts", "hosts", "ssh", "clone", "sync"]
    assert data["hosts"]["alpha"] == {
        "address": "127.0.0.2",
        "user": "root",
        "port": 22,
        "default_pool": "fast",
    }
    assert data["hosts"]["empty"] == {}
    assert list(data["ssh"]) == ["host_key_policy", "connect_timeout", "agent_forwarding"]
    assert data["clone"] == {
        "pool": "images",
        "compress": "on",
        "parallel": 4,
        "bandwidth_limit": "100M",
    }
    assert config_text(Config()).strip().splitlines()[-1].startswith("#")  # defaults: no keys


def test_save_creates_the_directory_atomically_and_keeps_permissions(cfg_file: Path) -> None:
    assert not cfg_file.parent.exists()
    save_config(Config(default_hosts=("alpha",)))
    assert load_config(environ={}).default_hosts == ("alpha",)
    cfg_file.chmod(0o600)
    save_config(Config(default_hosts=("beta",)))
    assert stat.S_IMODE(cfg_file.stat().st_mode) == 0o600
    assert load_config(environ={}).default_hosts == ("beta",)
    assert sorted(p.name for p in cfg_file.parent.iterdir()) == ["config.yaml"]  # no temp files


def test_save_refuses_values_from_the_environment(cfg_file: Path) -> None:
    config = load_config(environ={"KVM_CLONE_CLONE_PARALLEL": "8"})
    with pytest.raises(ConfigError, match="KVM_CLONE_CLONE_PARALLEL"):
        save_config(config)
    assert not cfg_file.exists()


# -- errors name the file, the dotted key and the problem ----------------------------------------


def test_error_names_file_key_and_allowed_values(cfg_file: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_text(cfg_file, "ssh:\n  host_key_policy: yes\n")
    assert str(exc.value) == (
        f"{cfg_file}: ssh.host_key_policy: must be one of strict, accept-new (got 'yes')"
    )
    assert exc.value.key == "ssh.host_key_policy"


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("ssh:\n  host_key_polcy: strict\n", "ssh.host_key_polcy", "ssh.host_key_policy"),
        ("clone:\n  paralel: 3\n", "clone.paralel", "clone.parallel"),
        ("hosts:\n  alpha:\n    adress: x\n", "hosts.alpha.adress", "hosts.alpha.address"),
        ("default_host: [alpha]\n", "default_host", "default_hosts"),
        ("synk: {}\n", "synk", "sync"),
    ],
)
def test_unknown_keys_are_errors_with_close_matches(
    cfg_file: Path, text: str, key: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_text(cfg_file, text)
    message = str(exc.value)
    assert message.startswith(f"{cfg_file}: {key}: unknown key")
    assert f"did you mean {suggestion}" in message


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("ssh: {connect_timeout: 0}\n", "ssh.connect_timeout", "seconds > 0 (got 0)"),
        ("ssh: {connect_timeout: -1}\n", "ssh.connect_timeout", "seconds > 0"),
        ("ssh: {keepalive_interval: -1}\n", "ssh.keepalive_interval", "seconds >= 0"),
        ("ssh: {connect_retries: 11}\n", "ssh.connect_retries", "from 0 to 10"),
        ("ssh: {known_hosts: ''}\n", "ssh.known_hosts", "must be a file path"),
        ("ssh: {config_file: relative/path}\n", "ssh.config_file", "absolute path or start"),
        ("ssh: {agent_forwarding: maybe}\n", "ssh.agent_forwarding", "true or false"),
        ("clone: {parallel: 0}\n", "clone.parallel", "from 1 to 16 (got 0)"),
        ("clone: {parallel: 17}\n", "clone.parallel", "from 1 to 16 (got 17)"),
        ("clone: {parallel: true}\n", "clone.parallel", "from 1 to 16 (got True)"),
        ("clone: {compress: gzip}\n", "clone.compress", "auto, on, off (got 'gzip')"),
        ("clone: {transfer: fast}\n", "clone.transfer", "auto, direct, relay"),
        ("clone: {bandwidth_limit: 10X}\n", "clone.bandwidth_limit", "such as 100M"),
        ("clone: {bandwidth_limit: 0}\n", "clone.bandwidth_limit", "positive"),
        ("clone: {pool: 'a/b'}\n", "clone.pool", "bad pool name 'a/b'"),
        ("clone: {pool: 5}\n", "clone.pool", "must be a string (got 5)"),
        ("sync: {mode: fast}\n", "sync.mode", "auto, bitmap, hash"),
        ("default_hosts: [alpha, '$(id)']\n", "default_hosts", "shell metacharacter '$'"),
        ("default_hosts: [alpha, alpha]\n", "default_hosts", "lists 'alpha' twice"),
        ("default_hosts: 5\n", "default_hosts", "list of hosts"),
        ("hosts: {'a;b': {}}\n", "hosts", "bad host 'a;b'"),
        ("hosts: {alpha: {port: 0}}\n", "hosts.alpha.port", "from 1 to 65535"),
        ("hosts: {alpha: {user: '-oX'}}\n", "hosts.alpha.user", "bad user"),
        ("hosts: {alpha: {address: 'root@h'}}\n", "hosts.alpha.address", "without user@"),
        ("hosts: {alpha: {address: 'h;x'}}\n", "hosts.alpha.address", "shell metacharacter"),
        ("hosts: {alpha: {uri: 'qemu:///session'}}\n", "hosts.alpha.uri", "not supported"),
        ("hosts: {alpha: {uri: 'qemu+ssh://h/system'}}\n", "hosts.alpha.uri", "over SSH itself"),
        ("hosts: {alpha: {uri: 'xen:///system'}}\n", "hosts.alpha.uri", "local URI"),
        ("hosts: {alpha: {libvirt_socket: '/run/../x'}}\n", "hosts.alpha.libvirt_socket", "'..'"),
        ("hosts: {alpha: {default_pool: '-x'}}\n", "hosts.alpha.default_pool", "starts with"),
        ("hosts: {alpha: [1]}\n", "hosts.alpha", "must be a mapping"),
        ("hosts: [alpha]\n", "hosts", "must be a mapping"),
        ("ssh: 3\n", "ssh", "must be a mapping"),
    ],
)
def test_bad_values_are_errors(cfg_file: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_text(cfg_file, text)
    assert str(exc.value).startswith(f"{cfg_file}: {key}: ")
    assert problem in str(exc.value)


def test_yaml_syntax_errors_and_duplicate_keys(cfg_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.yaml: invalid YAML at line 3"):
        load_text(cfg_file, "ssh:\n  - [\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 3.*'parallel' twice"):
        load_text(cfg_file, "clone:\n  parallel: 2\n  parallel: 3\n")
    with pytest.raises(ConfigError, match="must be a mapping of keys"):
        load_text(cfg_file, "- alpha\n")


def test_yaml_words_like_on_and_yes_are_read_as_intended(cfg_file: Path) -> None:
    config = load_text(
        cfg_file, "clone:\n  compress: on\n  verify: no\n  start: yes\n  preserve_mac: 1\n"
    )
    assert config.clone.compress == "on"
    assert config.clone.verify is False
    assert config.clone.start is True
    assert config.clone.preserve_mac is True
    assert load_text(cfg_file, "clone: {compress: off}\n").clone.compress == "off"


def test_values_are_normalised(cfg_file: Path) -> None:
    config = load_text(
        cfg_file,
        "ssh: {connect_timeout: 2.5}\nclone: {bandwidth_limit: 1048576, pool: ''}\n",
    )
    assert config.ssh.connect_timeout == 2.5
    assert config.clone.bandwidth_limit == "1048576"
    assert config.clone.bandwidth_limit_bytes == 1 << 20
    assert config.clone.pool is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("100M", 100 << 20), ("1G", 1 << 30), ("512k", 512 << 10), ("7", 7), ("2GiB", 2 << 30)],
)
def test_parse_bandwidth(text: str, value: int) -> None:
    assert parse_bandwidth(text) == value


def test_unreadable_or_non_utf8_file(cfg_file: Path) -> None:
    cfg_file.mkdir(parents=True)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(cfg_file, environ={})
    other = cfg_file.parent / "latin1.yaml"
    other.write_bytes(b"default_hosts: [caf\xe9]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(other, environ={})


# -- environment overrides -----------------------------------------------------------------------


def test_environment_overrides_the_file(cfg_file: Path) -> None:
    config = load_text(
        cfg_file,
        "ssh: {host_key_policy: strict}\nclone: {parallel: 3}\n",
        KVM_CLONE_SSH_HOST_KEY_POLICY="accept-new",
        KVM_CLONE_CLONE_PARALLEL="4",
        KVM_CLONE_SYNC_MODE="hash",
        KVM_CLONE_SSH_AGENT_FORWARDING="no",
        KVM_CLONE_CLONE_BANDWIDTH_LIMIT="null",
        KVM_CLONE_SSH_CONNECT_TIMEOUT="1.5",
        KVM_CLONE_DEFAULT_HOSTS="alpha, beta",
    )
    assert config.ssh.host_key_policy == "accept-new"
    assert config.clone.parallel == 4
    assert config.sync.mode == "hash"
    assert config.ssh.agent_forwarding is False
    assert config.clone.bandwidth_limit is None
    assert config.ssh.connect_timeout == 1.5
    assert config.default_hosts == ("alpha", "beta")
    assert config.sources == {
        "ssh.host_key_policy": "KVM_CLONE_SSH_HOST_KEY_POLICY",
        "ssh.connect_timeout": "KVM_CLONE_SSH_CONNECT_TIMEOUT",
        "ssh.agent_forwarding": "KVM_CLONE_SSH_AGENT_FORWARDING",
        "clone.parallel": "KVM_CLONE_CLONE_PARALLEL",
        "clone.bandwidth_limit": "KVM_CLONE_CLONE_BANDWIDTH_LIMIT",
        "sync.mode": "KVM_CLONE_SYNC_MODE",
        "default_hosts": "KVM_CLONE_DEFAULT_HOSTS",
    }


@pytest.mark.parametrize("word", ["true", "1", "yes", "TRUE"])
def test_environment_booleans(cfg_file: Path, word: str) -> None:
    assert load_config(environ={"KVM_CLONE_CLONE_START": word}).clone.start is True


def test_os_environ_is_the_default(cfg_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVM_CLONE_SYNC_MODE", "hash")
    assert load_config().sync.mode == "hash"
    assert load_config(environ={}).sync.mode == "auto"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KVM_CLONE_CLONE_PARALLEL": "lots"},
            "environment variable KVM_CLONE_CLONE_PARALLEL: clone.parallel: must be an integer",
        ),
        (
            {"KVM_CLONE_SSH_HOST_KEY_POLICY": "yes"},
            "KVM_CLONE_SSH_HOST_KEY_POLICY: ssh.host_key_policy: must be one of strict, "
            "accept-new (got 'yes')",
        ),
        ({"KVM_CLONE_DEFAULT_HOSTS": "alpha,;reboot"}, "KVM_CLONE_DEFAULT_HOSTS: default_hosts"),
        ({"KVM_CLONE_SSH_TIMEOUT": "3"}, "did you mean KVM_CLONE_SSH_CONNECT_TIMEOUT"),
        ({"KVM_CLONE_SSH_AGENT_FORWARDING": "perhaps"}, "must be true or false"),
    ],
)
def test_bad_environment_values_name_the_variable(
    cfg_file: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(environ=env)
    assert message in str(exc.value)


# -- dotted keys ---------------------------------------------------------------------------------


def test_get_key() -> None:
    config = sample_config()
    assert get_key(config, "ssh.connect_timeout") == 2.5
    assert get_key(config, "default_hosts") == ["alpha", "root@beta:2222"]
    assert get_key(config, "hosts.alpha.port") == 22
    assert get_key(config, "hosts.[::1]:2200.reach_address") == "10.0.0.7"
    assert get_key(config, "hosts.gamma.uri") == "qemu:///system"  # unconfigured: defaults
    assert get_key(config, "hosts.alpha")["default_pool"] == "fast"
    assert get_key(config, "sync") == {"mode": "hash"}
    assert set(get_key(config, "hosts")) == {"alpha", "[::1]:2200", "empty"}


def test_set_key_parses_per_type_and_returns_a_new_config() -> None:
    config = Config()
    updated = set_key(config, "ssh.connect_timeout", "30")
    assert updated.ssh.connect_timeout == 30
    assert config.ssh.connect_timeout == 10  # unchanged
    updated = set_key(updated, "clone.verify", "no")
    assert updated.clone.verify is False
    updated = set_key(updated, "default_hosts", "alpha,beta")
    assert updated.default_hosts == ("alpha", "beta")
    updated = set_key(updated, "clone.pool", "images")
    assert set_key(updated, "clone.pool", "null").clone.pool is None
    assert set_key(updated, "default_hosts", "").default_hosts == ()


def test_set_key_creates_hosts_with_dotted_names() -> None:
    config = set_key(Config(), "hosts.alpha.uri", "qemu:///system")
    assert list(config.hosts) == ["alpha"]
    config = set_key(config, "hosts.alpha.example.com.port", "2222")
    assert config.hosts["alpha.example.com"].port == 2222
    config = set_key(config, "hosts.10.0.0.5.user", "root")
    assert config.hosts["10.0.0.5"].user == "root"
    assert config.host("root@10.0.0.5:22").user == "root"  # looked up by its host part
    assert config.host("unknown") == HostConfig()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ssh.timeout", "3", "ssh.timeout: unknown key; did you mean ssh.connect_timeout?"),
        ("hosts.alpha.adress", "x", "did you mean hosts.alpha.address"),
        ("clone.parallel", "17", "clone.parallel: must be an integer from 1 to 16"),
        ("hosts.alpha.port", "ssh", "hosts.alpha.port: must be an integer from 1 to 65535"),
        ("hosts.a;reboot.uri", "qemu:///system", "bad host 'a;reboot'"),
        ("hosts.-oProxyCommand=x.port", "22", "starts with '-'"),
        ("hosts.alpha", "x", "hosts.alpha: is a section, not a setting"),
        ("ssh", "x", "ssh: is a section"),
        ("nonsense", "1", "unknown key; the keys are default_hosts, hosts.NAME.KEY"),
        ("default_hosts", "alpha,$(id)", "shell metacharacter '$'"),
    ],
)
def test_set_key_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        set_key(Config(), key, value)
    assert message in str(exc.value)


def test_unset_key() -> None:
    config = sample_config()
    assert unset_key(config, "ssh.connect_timeout").ssh.connect_timeout == 10
    assert unset_key(config, "default_hosts").default_hosts == ()
    assert "alpha" not in unset_key(config, "hosts.alpha").hosts
    assert unset_key(config, "hosts").hosts == {}
    assert unset_key(config, "clone").clone == CloneConfig()
    assert unset_key(config, "hosts.alpha.port").hosts["alpha"].port is None
    assert unset_key(config, "hosts.gamma") == config  # not set: no-op
    with pytest.raises(ConfigError, match=r"did you mean sync\.mode"):
        unset_key(config, "sync.mdoe")


def test_set_key_drops_the_environment_source_of_that_key(cfg_file: Path) -> None:
    config = load_config(environ={"KVM_CLONE_CLONE_PARALLEL": "4", "KVM_CLONE_SYNC_MODE": "hash"})
    updated = set_key(config, "clone.parallel", "5")
    assert updated.sources == {"sync.mode": "KVM_CLONE_SYNC_MODE"}


def test_pool_for_host() -> None:
    config = sample_config()
    assert config.pool_for("alpha") == "images"
    config = unset_key(config, "clone.pool")
    assert config.pool_for("alpha") == "fast"
    assert config.pool_for("gamma") == "default"


# -- the CLI -------------------------------------------------------------------------------------


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kvm-clone")
    config_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["config", *argv])
    code: int = config_cmd.run(args)
    return code


def test_cli_init_writes_the_defaults_and_refuses_to_overwrite(
    cfg_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("init") == 0
    assert cfg_file.read_text(encoding="utf-8") == default_config_text()
    assert load_config() == Config()
    assert capsys.readouterr().out.strip() == f"wrote {cfg_file}"

    cfg_file.write_text("default_hosts: [alpha]\n", encoding="utf-8")
    assert cli("init") == 1
    err = capsys.readouterr().err
    assert err.startswith("kvm-clone config: error: ")
    assert "--force" in err
    assert load_config().default_hosts == ("alpha",)  # untouched

    assert cli("init", "--force") == 0
    assert load_config().default_hosts == ()


def test_cli_set_get_unset(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("set", "hosts.alpha.address", "127.0.0.2") == 0
    assert cli("set", "default_hosts", "alpha,beta") == 0
    assert cli("set", "ssh.connect_timeout", "5") == 0
    assert load_config().host("alpha").address == "127.0.0.2"
    capsys.readouterr()

    assert cli("get", "hosts.alpha.address") == 0
    assert capsys.readouterr().out == "127.0.0.2\n"
    assert cli("get", "ssh.connect_timeout") == 0
    assert capsys.readouterr().out == "5\n"
    assert cli("get", "clone.pool") == 0
    assert capsys.readouterr().out == "null\n"
    assert cli("get", "ssh.agent_forwarding") == 0
    assert capsys.readouterr().out == "true\n"
    assert cli("get", "default_hosts") == 0
    assert capsys.readouterr().out == "- alpha\n- beta\n"
    assert cli("get", "default_hosts", "--output", "json") == 0
    assert json.loads(capsys.readouterr().out) == ["alpha", "beta"]

    assert cli("unset", "hosts.alpha") == 0
    assert "alpha" not in load_config().hosts
    assert cli("unset", "hosts.alpha") == 0
    assert "was not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("set", "ssh.host_key_policy", "yes"), "ssh.host_key_policy: must be one of strict"),
        (("set", "clone.paralel", "3"), "did you mean clone.parallel"),
        (("set", "hosts.$(id).port", "22"), "shell metacharacter '$'"),
        (("get", "ssh.nope"), "ssh.nope: unknown key"),
        (("unset", "nope"), "nope: unknown key"),
    ],
)
def test_cli_bad_keys_and_values_exit_1(
    cfg_file: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert cli(*argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("kvm-clone config: error: ")
    assert message in err
    assert not cfg_file.exists()  # nothing written


def test_cli_usage_errors_exit_2(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (("set", "ssh.connect_timeout"), ("bogus",), ("show", "--output", "xml")):
        with pytest.raises(SystemExit) as exc:
            cli(*argv)
        assert exc.value.code == 2


def test_cli_show_and_environment_notes(
    cfg_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("show") == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out) == Config().to_dict()
    assert "no file at" in err

    assert cli("set", "clone.parallel", "3") == 0
    monkeypatch.setenv("KVM_CLONE_CLONE_PARALLEL", "6")
    assert cli("show", "--output", "json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["clone"]["parallel"] == 6
    assert "clone.parallel comes from the environment (KVM_CLONE_CLONE_PARALLEL)" in err

    # set writes the file's value, never the environment's, and says the variable wins
    assert cli("set", "sync.mode", "hash") == 0
    assert yaml.safe_load(cfg_file.read_text(encoding="utf-8"))["clone"] == {"parallel": 3}
    assert cli("set", "clone.parallel", "2") == 0
    assert "KVM_CLONE_CLONE_PARALLEL is set and overrides clone.parallel" in capsys.readouterr().err
    assert "clone" not in yaml.safe_load(cfg_file.read_text(encoding="utf-8"))  # 2 is the default


def test_cli_reports_a_broken_file(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text("ssh:\n  host_key_policy: whatever\n", encoding="utf-8")
    assert cli("show") == 1
    assert f"{cfg_file}: ssh.host_key_policy: must be one of" in capsys.readouterr().err
    assert cli("set", "clone.parallel", "3") == 1  # refuses to rewrite a file it cannot read


def test_cli_path(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("path") == 0
    assert capsys.readouterr().out == f"{cfg_file}\n"


def test_cli_help_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli("--help")
    out = capsys.readouterr().out
    for key, _help in config_keys():
        assert key in out
    for word in ("init", "show", "get", "set", "unset", "path", "KVM_CLONE_CONFIG", "examples"):
        assert word in out
