#!/usr/bin/env bash
# Runs inside the fresh Debian root (see fresh-root.sh): the README's steps on a bare Debian 12,
# exactly as written there, each timed. With arguments (make targets and variables, for trying a
# slice by hand: `fresh-root.sh session ROOT venv`), only `make ARGS` runs after the first step.
set -euo pipefail
export CI_TIMES=/root/ci-times
source /root/kvm-clone/.ci/timing.sh
cd /root/kvm-clone

bare_debian() {
    # The README: what a bare Debian 12 needs before the two commands.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates git make >/dev/null
    # The environment's extra CA certificates (copied in by fresh-root.sh) into the bundle.
    update-ca-certificates >/dev/null
}

stop_lab() { make lab-down; }
trap 'timed "fresh root: make lab-down" stop_lab || true' EXIT

timed "fresh root: bare Debian (apt-get install ca-certificates git make)" bare_debian
if [ $# -gt 0 ]; then
    timed "fresh root: make $*" make "$@"
    exit
fi
timed "fresh root: make test (apt, venv, lab up, ruff, mypy, lint-imports, pytest)" make test
timed "fresh root: make demo in tmux (the TUI shows the lab's hosts, then quits)" \
    bash .ci/demo-check.sh
