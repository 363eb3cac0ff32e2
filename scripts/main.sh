#!/usr/bin/env bash
# The README's main-job command: install everything (idempotent), start the
# embedded engine (broker + worker + SQLite on ipc sockets), run containers
# through the bus (one from an image, with a volume and a published port), and show
# what the event log recorded.
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
"$VENV/bin/python" -c "from engine.images.rootfs import build_busybox_rootfs as b; b('$ROOTFS')"

show() { printf '\n\033[1m$ berth %s\033[0m\n' "$*"; "$B" "$@"; }

# Whatever happens after `berth up`, the engine stops and the demo container goes:
# a failed or interrupted run leaves nothing running, and the next run starts clean.
engine_started=0
finish() {
    if [ "$engine_started" -eq 1 ]; then
        "$B" --timeout 5 rm -f demo-counter demo-web >/dev/null 2>&1 || true
        "$B" --timeout 5 volume rm demo-site >/dev/null 2>&1 || true
        "$B" --timeout 5 rmi demo/busybox:1 >/dev/null 2>&1 || true
        "$B" down >/dev/null 2>&1 || true
    fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

engine_started=1
show up --detach
"$B" rm -f demo-counter demo-web >/dev/null 2>&1 || true   # left by a run that was killed
"$B" volume rm demo-site >/dev/null 2>&1 || true
"$B" rmi demo/busybox:1 >/dev/null 2>&1 || true
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
# An image: the busybox root filesystem imported as an image, served by httpd with a named
# volume and a published port on the default network, and a page fetched from the host.
mkdir -p "$BERTH_ROOT/demo"
tar -C "$ROOTFS" -cf "$BERTH_ROOT/demo/busybox.tar" .
show image import "$BERTH_ROOT/demo/busybox.tar" demo/busybox:1
show volume create demo-site
show run --rm -v demo-site:/www demo/busybox:1 sh -c 'echo "<h1>hello from a berth volume</h1>" > /www/index.html'
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
show run -d --name demo-web -p "$PORT:80" -v demo-site:/www:ro demo/busybox:1 httpd -f -p 80 -h /www
show port demo-web
printf '\n\033[1m$ fetch http://127.0.0.1:%s/\033[0m\n' "$PORT"
"$VENV/bin/python" - "$PORT" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/"
for _ in range(50):
    try:
        with urllib.request.urlopen(url, timeout=2) as page:
            print(page.read().decode().strip())
            break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit(f"no answer from {url}")
PY
show rm -f demo-web
show volume rm demo-site
show rmi demo/busybox:1
show events --since 5m
show projection rebuild --verify
show audit verify
show down
engine_started=0
