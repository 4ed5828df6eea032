"""The emulated TPM's state: planned, staged, committed and rolled back with a clone.

libvirt keeps the state of a VM's emulated TPM (swtpm) in ``/var/lib/libvirt/swtpm/<uuid>/``
on its host: a directory named after the domain's UUID, a few KiB (``tpm2/tpm2-00.permall``).
A clone gets a copy under its own UUID. Like disks, it is staged first under a partial name
(``/var/lib/libvirt/swtpm/.kvmclone-partial-<job>-<new uuid>``), checked against the source's
digest, renamed to its final name at commit, and removed on rollback (the journal's
``tpm_state``). A VM that never started has no state: libvirt creates it at the first start.

That directory is libvirt's, not a storage pool: the state cannot be anywhere else (libvirt
9 has no setting for where a TPM keeps it), so this is the one place outside the destination
pool where a clone writes. Every path there is ``/var/lib/libvirt/swtpm/<one name>``, the name
a UUID or a ``.kvmclone-partial-`` name (checked on the host again), written without following
symlinks, and removed only as a whole directory of that form.

The host side is a small stdlib-only script run with ``python3 -c`` (Python 3.8+).
"""

from __future__ import annotations

import json
import posixpath
import uuid as uuid_module
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from kvm_clone_tui.engine.errors import HostError
from kvm_clone_tui.engine.hosts import Host
from kvm_clone_tui.engine.journal import STAGING_PREFIX, Journal, JournalRecord, StagedFile

SWTPM_ROOT = "/var/lib/libvirt/swtpm"
#: TPM state is a few KiB; anything much larger is not what this module expects to copy.
MAX_STATE_BYTES = 16 << 20

# The host side. argv: command, then paths; `unpack` reads the packed state on stdin.
# Paths are checked to be ROOT/<name> with name a UUID or a staging name; files are written
# and read relative to directory descriptors opened with O_NOFOLLOW.
_SCRIPT = r"""
import base64, grp, hashlib, json, os, pwd, re, shutil, stat, sys
ROOT = "/var/lib/libvirt/swtpm"
UUID = r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"
NAME = re.compile(r"^(\.kvmclone-partial-[A-Za-z0-9_.-]+-)?" + UUID + "$")
MAX = @MAX@
NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(1)

def checked(path):
    if os.path.dirname(path) != ROOT or not NAME.match(os.path.basename(path)):
        fail("refused TPM state path %s: not %s/<uuid>" % (path, ROOT))
    return path

def walk(dfd, rel, out, total):
    for name in sorted(os.listdir(dfd)):
        path = rel + "/" + name if rel else name
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        entry = {"path": path, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                 "gid": st.st_gid}
        try:
            entry["user"] = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            pass
        try:
            entry["group"] = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            pass
        if stat.S_ISDIR(st.st_mode):
            entry["type"] = "dir"
            out.append(entry)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW, dir_fd=dfd)
            try:
                total = walk(sub, path, out, total)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(name, os.O_RDONLY | NOFOLLOW, dir_fd=dfd)
            try:
                chunks = []
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(fd)
            data = b"".join(chunks)
            total += len(data)
            if total > MAX:
                fail("the TPM state is larger than %d bytes: not a TPM state" % MAX)
            entry.update(type="file", size=len(data), data=base64.b64encode(data).decode())
            out.append(entry)
        else:
            fail("%s in the TPM state is not a file or directory" % path)
    return total

def digest(entries):
    h = hashlib.sha256()
    for e in entries:
        data = base64.b64decode(e.get("data", ""))
        h.update(json.dumps([e["path"], e["type"], e["mode"]]).encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()

def pack(path):
    try:
        dfd = os.open(checked(path), os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
    except FileNotFoundError:
        return {"exists": False}
    except OSError as e:
        fail("%s: %s" % (path, e.strerror))
    try:
        st = os.fstat(dfd)
        entries = []
        total = walk(dfd, "", entries, 0)
    finally:
        os.close(dfd)
    return {"exists": True, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "entries": entries, "bytes": total, "digest": digest(entries)}

def owner(e):
    uid, gid = e["uid"], e["gid"]
    try:
        uid = pwd.getpwnam(e["user"]).pw_uid if "user" in e else uid
    except KeyError:
        pass
    try:
        gid = grp.getgrnam(e["group"]).gr_gid if "group" in e else gid
    except KeyError:
        pass
    return uid, gid

def unpack(path, packed):
    checked(path)
    if not os.path.isdir(ROOT):
        os.makedirs(ROOT, 0o711)
    os.mkdir(path, 0o700)
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
    try:
        dirs = {"": top}
        for e in packed["entries"]:
            rel = e["path"]
            parts = rel.split("/")
            if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
                fail("bad path in the TPM state: %r" % rel)
            parent = dirs.get("/".join(parts[:-1]))
            if parent is None:
                fail("bad order in the TPM state: %r" % rel)
            name = parts[-1]
            if e["type"] == "dir":
                os.mkdir(name, 0o700, dir_fd=parent)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW, dir_fd=parent)
                dirs[rel] = fd
            else:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600,
                             dir_fd=parent)
                try:
                    view = memoryview(base64.b64decode(e["data"]))
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException:
                    os.close(fd)
                    raise
            os.fchown(fd, *owner(e))
            os.fchmod(fd, e["mode"])
            if e["type"] != "dir":
                os.close(fd)
        for rel, fd in sorted(dirs.items(), reverse=True):
            os.fsync(fd)
        os.fchown(top, *owner(packed))
        os.fchmod(top, packed["mode"])
    finally:
        for fd in dirs.values():
            os.close(fd)
    root = os.open(ROOT, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(root)
    os.close(root)
    written = pack(path)
    return {"digest": written["digest"], "bytes": written["bytes"]}

def commit(staging, final):
    checked(staging), checked(final)
    if os.path.lexists(final):
        fail("%s already exists" % final)
    os.rename(staging, final)
    root = os.open(ROOT, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(root)
    os.close(root)
    return {"ok": True}

def remove(paths):
    removed = []
    for path in paths:
        try:
            st = os.lstat(checked(path))
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            fail("%s is not a directory" % path)
        shutil.rmtree(path)
        removed.append(path)
    return {"ok": True, "removed": removed}

try:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pack":
        out = pack(args[0])
        if args[1:] == ["--summary"] and out["exists"]:
            out = {k: v for k, v in out.items() if k != "entries"}
    elif cmd == "unpack":
        out = unpack(args[0], json.load(sys.stdin))
    elif cmd == "commit":
        out = commit(args[0], args[1])
    elif cmd == "remove":
        out = remove(args)
    else:
        fail("unknown command %r" % cmd)
except OSError as e:
    fail("%s: %s" % (e.filename or "TPM state", e.strerror))
print(json.dumps(out))
""".replace("@MAX@", str(MAX_STATE_BYTES))


@dataclass(frozen=True)
class TpmStatePlan:
    """Where the clone's TPM state comes from and goes (decided by the plan)."""

    source_dir: str  # /var/lib/libvirt/swtpm/<source uuid>
    staging_dir: str  # /var/lib/libvirt/swtpm/.kvmclone-partial-<job>-<new uuid>
    final_dir: str  # /var/lib/libvirt/swtpm/<new uuid>
    size: int  # bytes of state at planning time
    digest: str  # sha256 over the tree at planning time (informative: copied again at run)


class TpmStateError(HostError):
    """Reading, writing or checking TPM state failed on a host."""


def state_dir(vm_uuid: str) -> str:
    """libvirt's TPM state directory of the domain ``vm_uuid`` on its host."""
    return posixpath.join(SWTPM_ROOT, str(uuid_module.UUID(vm_uuid)))


def staging_dir(job_id: str, new_uuid: str) -> str:
    """Where a job stages the clone's TPM state before commit."""
    return posixpath.join(SWTPM_ROOT, f"{STAGING_PREFIX}{job_id}-{uuid_module.UUID(new_uuid)}")


@dataclass(frozen=True)
class TpmDevice:
    """What a domain's ``<tpm>`` says (pure parse of its XML)."""

    model: str
    backend: str  # emulator | passthrough | external | ...
    version: str | None
    encrypted: bool  # <encryption secret=...>: the state is encrypted with a libvirt secret
    persistent_state: bool


def tpm_devices(domain_xml: str) -> list[TpmDevice]:
    """The TPMs of a domain definition (already checked by the planner's parse)."""
    root = ET.fromstring(domain_xml)
    out = []
    for tpm in root.findall("devices/tpm"):
        backend = tpm.find("backend")
        out.append(
            TpmDevice(
                model=tpm.get("model", "tpm-tis"),
                backend=(backend.get("type") if backend is not None else None) or "none",
                version=backend.get("version") if backend is not None else None,
                encrypted=backend is not None and backend.find("encryption") is not None,
                persistent_state=backend is not None and backend.get("persistent_state") == "yes",
            )
        )
    return out


async def _script(host: Host, args: list[str], stdin: str | None = None) -> dict[str, Any]:
    done = await host.run(["python3", "-c", _SCRIPT, *args], input=stdin, check=False)
    try:
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (done.stderr.strip().splitlines() or [f"exit {done.exit_status}"])[-1]
        raise TpmStateError(host.name, f"TPM state {args[0]}: {detail}") from None
    if done.exit_status != 0 or "error" in out:
        raise TpmStateError(host.name, f"TPM state: {out.get('error', done.stderr.strip())}")
    return out


async def plan_tpm_state(
    src: Host,
    dst: Host,
    source_xml: str,
    source_uuid: str,
    new_uuid: str,
    job_id: str,
    live: bool,
    conflicts: list[str],
    warnings: list[str],
) -> TpmStatePlan | None:
    """Check the VM's TPMs; the state to copy, or None (no emulated TPM, or never started)."""
    emulated = [t for t in tpm_devices(source_xml) if t.backend == "emulator"]
    if not emulated:
        return None
    if len(emulated) > 1:
        conflicts.append("the VM has more than one emulated TPM: not supported")
        return None
    tpm = emulated[0]
    has_swtpm = await dst.run(
        ["sh", "-c", "command -v swtpm && command -v swtpm_setup"], check=False
    )
    if has_swtpm.exit_status != 0:
        conflicts.append(
            f"the VM has an emulated TPM ({tpm.model}) but {dst.name} has no swtpm to run it "
            "(apt-get install swtpm swtpm-tools, or dnf install swtpm swtpm-tools)"
        )
    if tpm.encrypted:
        warnings.append(
            "tpm: its state is encrypted with a libvirt secret; define the same secret (same "
            "UUID and value) on the destination before starting the clone"
        )
    source = state_dir(source_uuid)
    try:
        summary = await _script(src, ["pack", source, "--summary"])
    except TpmStateError as exc:
        conflicts.append(f"the TPM state {source} cannot be read on {src.name}: {exc.message}")
        return None
    if not summary["exists"]:
        warnings.append(
            f"tpm: {src.name} has no TPM state for the VM yet ({source}: it never started); "
            "the clone gets a fresh TPM at its first start"
        )
        return None
    if live:
        warnings.append(
            "tpm: the source runs; its TPM state is copied as it is when the copy starts"
        )
    return TpmStatePlan(
        source_dir=source,
        staging_dir=staging_dir(job_id, new_uuid),
        final_dir=state_dir(new_uuid),
        size=int(summary["bytes"]),
        digest=str(summary["digest"]),
    )


async def stage_tpm_state(src: Host, dst: Host, plan: TpmStatePlan, journal: Journal) -> str:
    """Copy the state into its staging directory (journalled first); its verified digest."""
    packed = await _script(src, ["pack", plan.source_dir])
    if not packed["exists"]:
        raise TpmStateError(
            src.name, f"the TPM state {plan.source_dir} vanished since the clone was planned"
        )
    journal.record.tpm_state.append(StagedFile(plan.staging_dir, plan.final_dir))
    journal.save()
    written = await _script(dst, ["unpack", plan.staging_dir], stdin=json.dumps(packed))
    if written["digest"] != packed["digest"]:
        raise TpmStateError(
            dst.name,
            f"the TPM state written to {plan.staging_dir} differs from {plan.source_dir} on "
            f"{src.name}",
        )
    return str(packed["digest"])


async def commit_tpm_state(dst: Host, journal: Journal) -> None:
    """Rename staged TPM state to its final directory (before the domain is defined)."""
    for staged in journal.record.tpm_state:
        if staged.committed:
            continue
        await _script(dst, ["commit", staged.staging, staged.final])
        staged.committed = True
        journal.save()


async def rollback_tpm_state(dst: Host, record: JournalRecord) -> list[str]:
    """Remove the TPM state a job staged or committed; the problems met (empty: all gone)."""
    problems = []
    for staged in record.tpm_state:
        # The final directory only once this job put it there (never another's state).
        paths = [staged.staging, staged.final] if staged.committed else [staged.staging]
        try:
            await _script(dst, ["remove", *paths])
            staged.committed = False
        except Exception as exc:
            problems.append(f"TPM state {staged.final}: {exc}")
    return problems


async def drop_replaced_tpm_state(dst: Host, replaced_xml: str | None) -> None:
    """After commit: remove the TPM state of the VM that ``--force`` replaced, if it had one.

    It is kept until then (undefined with ``VIR_DOMAIN_UNDEFINE_KEEP_TPM``) so that a rollback
    can restore the replaced VM with its TPM.
    """
    if not replaced_xml:
        return
    if not any(t.backend == "emulator" for t in tpm_devices(replaced_xml)):
        return
    old_uuid = (ET.fromstring(replaced_xml).findtext("uuid") or "").strip()
    if old_uuid:
        await _script(dst, ["remove", state_dir(old_uuid)])
