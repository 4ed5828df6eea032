#!/usr/bin/env bash
# `make demo` in tmux, as an operator would start it: the TUI must show the lab's three hosts and
# alpha's sample VMs, then quit on `q`. Prints the screen it saw.
set -euo pipefail
cd "$(dirname "$0")/.."
screen=$(mktemp)
rm -f /tmp/demo.rc
tmux kill-session -t demo 2>/dev/null || true
tmux new-session -d -s demo -x 200 -y 50 "make demo; echo \$? > /tmp/demo.rc"
shows_the_lab() {
    tmux capture-pane -p -t demo >"$screen" 2>/dev/null || return 1
    local word
    for word in alpha beta gamma web01 db01 writer; do grep -q "$word" "$screen" || return 1; done
}
deadline=$((SECONDS + 240))
until shows_the_lab; do
    if [ -e /tmp/demo.rc ] || [ $SECONDS -gt $deadline ]; then
        echo "make demo did not show the lab's hosts and VMs; its screen:"
        cat "$screen"
        tmux kill-session -t demo 2>/dev/null || true
        exit 1
    fi
    sleep 1
done
cat "$screen"
tmux send-keys -t demo q
deadline=$((SECONDS + 30))
until [ -e /tmp/demo.rc ]; do
    [ $SECONDS -le $deadline ] || { echo "the TUI did not quit on q"; exit 1; }
    sleep 0.5
done
rc=$(cat /tmp/demo.rc)
tmux kill-session -t demo 2>/dev/null || true
[ "$rc" = 0 ] || { echo "make demo exited $rc"; exit 1; }
echo "make demo: the TUI showed the lab and quit cleanly"
