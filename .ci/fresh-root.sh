#!/usr/bin/env bash
# A fresh Debian 12 root for CI: `fresh-root.sh base|create|session|destroy ROOT`.
#
# base            bootstrap plain Debian (debootstrap --variant=minbase) into a cached tarball:
#                 nothing of kvm-clone's is in it, and a missing or broken cache is simply rebuilt.
# create ROOT     unpack the base into ROOT, add `git archive HEAD` of this checkout as
#                 /root/kvm-clone and the environment's own settings for reaching the package
#                 registries (extra CA certificates, pip's configuration files, apt's sources and
#                 settings that no Debian package owns), nothing else.
# session ROOT    run .ci/in-root.sh inside ROOT: in a private mount namespace (nothing mounted
#                 here is seen by the machine), ROOT bind-mounted onto itself (the lab's `unshare
#                 --propagation private` needs a mount point), /proc, /sys, /dev, /dev/pts bound.
# destroy ROOT    end every process whose root is ROOT, then delete ROOT.
set -euo pipefail

SUITE=bookworm
CACHE_DIR=${KVM_CLONE_CI_CACHE:-/var/cache/kvm-clone-ci}
BASE_TAR="$CACHE_DIR/$SUITE-minbase.tar"
CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "fresh-root: $*" >&2; exit 1; }

# The Debian mirror apt is configured with here (deb822 or one-line sources).
debian_mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
        | grep -v security | head -1)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{print $2}' | grep -v security | head -1)
    echo "${uri:-http://deb.debian.org/debian}"
}

cmd_base() {
    if [ -s "$BASE_TAR" ] && tar -tf "$BASE_TAR" ./usr/bin/apt-get >/dev/null 2>&1; then
        echo "base: cached $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    mkdir -p "$CACHE_DIR"
    local tmp
    tmp=$(mktemp -d "$CACHE_DIR/bootstrap.XXXXXX")
    echo "base: debootstrap --variant=minbase $SUITE from $(debian_mirror)"
    debootstrap --variant=minbase "$SUITE" "$tmp/root" "$(debian_mirror)" >"$tmp/log" 2>&1 \
        || { tail -20 "$tmp/log"; rm -rf "$tmp"; die "debootstrap failed"; }
    tar -C "$tmp/root" -cf "$tmp/base.tar" .
    mv "$tmp/base.tar" "$BASE_TAR"
    rm -rf "$tmp"
}

# Copy file $1 (a path on this machine) to the same path under ROOT.
copy_in() {
    local root=$1 path=$2
    [ -e "$path" ] || return 0
    mkdir -p "$root$(dirname "$path")"
    cp -L "$path" "$root$path"
    echo "  settings: $path"
}

# Of the apt settings files given, those that no installed Debian package owns and that set how
# apt fetches (Acquire::...): this environment's own way of reaching the archive.
fetch_settings() {
    local f
    for f in "$@"; do
        [ -f "$f" ] && grep -q 'Acquire::' "$f" || continue
        dpkg -S "$f" >/dev/null 2>&1 || echo "$f"
    done
}

cmd_create() {
    local root=$1 f
    [ ! -e "$root" ] || die "$root exists: destroy it first"
    mkdir -p "$root"
    tar -C "$root" -xf "$BASE_TAR"
    # The registries are reached through the environment's settings, not the project's.
    rm -f "$root/etc/apt/sources.list" # debootstrap's own: the machine's sources replace it
    for f in /usr/local/share/ca-certificates/*.crt; do copy_in "$root" "$f"; done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
        $(fetch_settings /etc/apt/apt.conf.d/*); do
        copy_in "$root" "$f"
    done
    # pip's configuration files (those `pip config debug` reports as existing) and the
    # constraint files they name.
    python3 -m pip config debug 2>/dev/null | sed -nE 's/^ +(\/[^,]+), exists: True$/\1/p' \
        | while read -r f; do copy_in "$root" "$f"; done
    python3 -m pip config list 2>/dev/null | sed -nE "s/^[a-z]+\.constraint='(.*)'$/\1/p" \
        | tr ' ' '\n' | while read -r f; do [ -z "$f" ] || copy_in "$root" "$f"; done
    mkdir -p "$root/root/kvm-clone"
    git -C "$CHECKOUT" archive HEAD | tar -C "$root/root/kvm-clone" -x
    echo "checkout: $(git -C "$CHECKOUT" rev-parse --short HEAD) -> $root/root/kvm-clone"
}

cmd_session() {
    local root=$1
    shift
    [ -d "$root/root/kvm-clone" ] || die "$root is not a fresh root: create it first"
    # Only the variables that carry the environment's registry settings, plus the basics.
    local -a vars=(HOME=/root TERM=xterm-256color LANG=C.UTF-8 CI="${CI:-}"
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONUNBUFFERED=1)
    local v
    while read -r v; do vars+=("$v"); done < <(env | grep -E '^(PIP|SSL)_[A-Z_]*=' || true)
    unshare --mount --propagation private -- bash -euc '
        root=$1; shift
        mount --bind "$root" "$root"
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        # /dev itself, then a devpts and a /dev/shm of the root'"'"'s own: this machine stacks two
        # devpts mounts on /dev/pts, and libvirt'"'"'s per-domain /dev then loses the one whose
        # ptys QEMU opens ("-chardev pty: Failed to create PTY").
        mount --bind /dev "$root/dev"
        mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
        mount --bind "$root/dev/pts/ptmx" "$root/dev/ptmx"
        mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
        exec chroot "$root" env -i "$@"
    ' fresh-root "$root" "${vars[@]}" bash /root/kvm-clone/.ci/in-root.sh "$@"
}

cmd_destroy() {
    local root=$1 pid id
    [ -d "$root" ] || return 0
    id=$(stat -c %d:%i "$root")
    for pid in /proc/[0-9]*; do
        if [ "$(stat -L -c %d:%i "$pid/root" 2>/dev/null)" = "$id" ]; then
            kill -KILL "${pid#/proc/}" 2>/dev/null || true
        fi
    done
    sleep 1
    # The binds lived in the session's private namespace only: here ROOT holds plain folders.
    if grep -q " $root[/ ]" /proc/self/mountinfo; then die "$root still has mounts here"; fi
    rm -rf --one-file-system "$root"
}

case "${1:-}" in
base) cmd_base ;;
create) cmd_create "${2:?ROOT}" ;;
session) cmd_session "${2:?ROOT}" "${@:3}" ;;
destroy) cmd_destroy "${2:?ROOT}" ;;
*) die "usage: fresh-root.sh base|create ROOT|session ROOT [STEP...]|destroy ROOT" ;;
esac
