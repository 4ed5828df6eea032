"""Names that reach a shell, ssh or libvirt XML: hostile ones are refused before any connection."""

from __future__ import annotations

import shlex

import pytest

from kvm_clone_tui.api.validation import (
    HostSpec,
    ValidationError,
    parse_host_spec,
    shell_quote_argv,
    validate_host_name,
    validate_pool_name,
    validate_remote_path,
    validate_user_name,
    validate_vm_name,
)

HOSTILE = [
    "; rm -rf /",
    "alpha;reboot",
    "-oProxyCommand=x",
    "-oProxyCommand=touch /tmp/pwned",
    "root@-oProxyCommand=x",
    "$(id)",
    "alpha$(id)",
    "`id`",
    "a`id`b",
    "alpha\nbeta",
    "alpha\r",
    "alpha\tbeta",
    "alpha\0",
    "../etc",
    "a/b",
    "alpha beta",
    " alpha",
    "a|b",
    "a&b",
    "a>b",
    "a<b",
    "'alpha'",
    '"alpha"',
    "a\\b",
    "a*",
    "a?",
    "a!b",
    "{a,b}",
    "a[1]",
    "~root",
    "#alpha",
]


@pytest.mark.parametrize("host", HOSTILE)
def test_hostile_host_names_are_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="bad host"):
        validate_host_name(host)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("", "empty"),
        ("-oProxyCommand=x", "starts with '-'"),
        ("root@-x", "starts with '-'"),
        ("; rm -rf /", "shell metacharacter ';'"),
        ("$(id)", "shell metacharacter '\\$'"),
        ("a`id`", "shell metacharacter '`'"),
        ("alpha\nbeta", "U\\+000A"),
        ("alpha beta", "whitespace"),
        ("../etc", "'/'"),
        ("@alpha", "user is empty"),
        ("root@", "host is empty"),
        ("root@:22", "host is empty"),
        ("a@b@c", "more than one '@'"),
        ("alpha:0", "port must be a number from 1 to 65535"),
        ("alpha:65536", "port must be a number from 1 to 65535"),
        ("alpha:", "port must be"),
        ("alpha:ssh", "port must be"),
        ("[::1]:99999", "port must be"),
        ("[::1", "without its ']'"),
        ("[nope]:22", "not an IPv6 address"),
        ("a:b:c", "not an IPv6 address"),
        ("alpha]", "brackets are only allowed around an IPv6 address"),
        ("wébserver", "'é'"),
        ("x" * 254, "at most 253"),
    ],
)
def test_host_errors_say_what_is_wrong(host: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_host_spec(host)


@pytest.mark.parametrize(
    ("spec", "user", "host", "port"),
    [
        ("alpha", None, "alpha", None),
        ("alpha.example.com", None, "alpha.example.com", None),
        ("root@alpha", "root", "alpha", None),
        ("alpha:2222", None, "alpha", 2222),
        ("root@10.0.0.5:2222", "root", "10.0.0.5", 2222),
        ("[::1]:22", None, "::1", 22),
        ("[::1]", None, "::1", None),
        ("admin@[2001:db8::1]:65535", "admin", "2001:db8::1", 65535),
        ("::1", None, "::1", None),
        ("fe80::1%eth0", None, "fe80::1%eth0", None),
        ("svc_user.1@host-1_a", "svc_user.1", "host-1_a", None),
    ],
)
def test_host_specs_parse(spec: str, user: str | None, host: str, port: int | None) -> None:
    assert parse_host_spec(spec) == HostSpec(user=user, host=host, port=port, original=spec)
    assert validate_host_name(spec) == spec


def test_user_names() -> None:
    assert validate_user_name("root") == "root"
    for bad in ("", "-x", "ro ot", "r;t"):
        with pytest.raises(ValidationError, match="bad user"):
            validate_user_name(bad)


@pytest.mark.parametrize(
    "name", ["wébserver 01", "app.v2", "web01", "db_01-copy", "日本語のVM", "a" * 255, "é" * 127]
)
def test_vm_names_libvirt_accepts_are_accepted(name: str) -> None:
    assert validate_vm_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a/b", "'/'"),
        ("../etc", "'/'"),
        (".", "not a name"),
        ("..", "not a name"),
        ("-rf", "starts with '-'"),
        ("web\n01", "U\\+000A"),
        ("web\t01", "U\\+0009"),
        ("web\x0001", "U\\+0000"),
        ("web\x7f", "U\\+007F"),
        ("web\u202e10", "U\\+202E"),  # right-to-left override: looks like another name
        ("a" * 256, "256 bytes"),
        ("é" * 128, "256 bytes"),
    ],
)
def test_bad_vm_names_are_refused(name: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=f"bad VM name.*{reason}"):
        validate_vm_name(name)


def test_pool_names() -> None:
    assert validate_pool_name("default") == "default"
    assert validate_pool_name("fast pool.2") == "fast pool.2"
    for bad in ("", "a/b", "-x", "a\nb", "x" * 256):
        with pytest.raises(ValidationError, match="bad pool name"):
            validate_pool_name(bad)


@pytest.mark.parametrize(
    "path", ["/", "/var/lib/libvirt/images/web01.qcow2", "/srv/VMs/wébserver 01.img", "/a/.b/c.."]
)
def test_remote_paths_accepted(path: str) -> None:
    assert validate_remote_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("images/web01.qcow2", "not absolute"),
        ("/var/lib/libvirt/images/../../../etc/shadow", "'..'"),
        ("/var/lib/./x", "'.'"),
        ("/var//lib", "'//'"),
        ("//var/lib", "'//'"),
        ("/var/lib/", "ends with '/'"),
        ("/var/lib\n/x", "U\\+000A"),
        ("/var/lib\0x", "U\\+0000"),
    ],
)
def test_bad_remote_paths_are_refused(path: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        validate_remote_path(path)


def test_remote_path_must_stay_under_its_base() -> None:
    base = "/var/lib/libvirt/images"
    assert validate_remote_path(f"{base}/web01.qcow2", under=base) == f"{base}/web01.qcow2"
    assert validate_remote_path(f"{base}/sub/a.raw", under=base + "/") == f"{base}/sub/a.raw"
    assert validate_remote_path(base, under=base) == base
    assert validate_remote_path("/etc/x", under="/") == "/etc/x"
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        validate_remote_path(f"{base}/../../../etc/shadow", under=base)
    with pytest.raises(ValidationError, match="not inside /var/lib/libvirt/images"):
        validate_remote_path("/var/lib/libvirt/images-evil/x", under=base)
    with pytest.raises(ValidationError, match="not inside"):
        validate_remote_path("/etc/shadow", under=base)
    with pytest.raises(ValidationError, match="bad base directory"):
        validate_remote_path("/x/y", under="relative")


def test_shell_quote_argv_keeps_every_argument_whole() -> None:
    argv = ["virsh", "dumpxml", "wébserver 01", "$(id)", "; rm -rf /", "`id`", "it's", ""]
    line = shell_quote_argv(argv)
    assert shlex.split(line) == argv
    assert line.startswith("virsh dumpxml 'wébserver 01' '$(id)'")
    with pytest.raises(ValidationError, match="NUL"):
        shell_quote_argv(["a\0b"])
    with pytest.raises(TypeError):
        shell_quote_argv("virsh list")
