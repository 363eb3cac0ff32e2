#!/usr/bin/env bash
# The README's main-job command: install everything (idempotent), start the
# embedded engine (broker + worker + SQLite on ipc sockets), run containers
# through the bus, and show what the event log recorded.
#
# Run it as root, or through sudo; as another user it runs itself again through sudo.
# BERTH_ROOT and BERTH_RUN choose where the engine keeps its state and sockets.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
. "$REPO/scripts/lib/common.sh"
require_root "$@"
"$REPO/scripts/install.sh"
export BERTH_ROOT="${BERTH_ROOT:-/var/lib/berth}" BERTH_RUN="${BERTH_RUN:-/run/berth}"
VENV=${BERTH_VENV:-$REPO/.venv}
B="$VENV/bin/berth"
ROOTFS="$BERTH_ROOT/rootfs/busybox"
"$VENV/bin/python" -c "from engine.rootfs import build_busybox_rootfs as b; b('$ROOTFS')"

show() { printf '\n\033[1m$ berth %s\033[0m\n' "$*"; "$B" "$@"; }

# Whatever happens after `berth up`, the engine stops and the demo container goes:
# a failed or interrupted run leaves nothing running, and the next run starts clean.
engine_started=0
finish() {
    if [ "$engine_started" -eq 1 ]; then
        "$B" --timeout 5 rm -f demo-counter >/dev/null 2>&1 || true
        "$B" down >/dev/null 2>&1 || true
    fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

engine_started=1
show up --detach
"$B" rm -f demo-counter >/dev/null 2>&1 || true   # left by a run that was killed
show run --rm "$ROOTFS" sh -c 'echo "hello from a container, pid $$ in its own namespace"' || true
show run -d --name demo-counter "$ROOTFS" sh -c 'trap "exit 0" TERM; i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done'
sleep 1
show ps
show exec demo-counter sh -c 'echo "exec inside $(hostname)"'
show pause demo-counter
show unpause demo-counter
show checkpoint demo-counter
show restore demo-counter
sleep 0.6
show logs demo-counter
AT=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
show stop -t 2 demo-counter
show history demo-counter
printf '\n(state at %s, before the stop, computed from the log)\n' "$AT"
show state --at "$AT" demo-counter
show rm demo-counter
show events --since 5m
show projection rebuild --verify
show audit verify
show down
engine_started=0
