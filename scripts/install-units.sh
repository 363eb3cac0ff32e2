#!/usr/bin/env bash
# Install berth's systemd units: berth.service (the embedded engine),
# berth-broker.service and berth-worker@NODE.service (the parts apart).
#
#   scripts/install-units.sh [--dest DIR] [--berth PATH]
#
# --dest   where the unit files go (default /etc/systemd/system)
# --berth  the berth executable the units run (default: this checkout's .venv/bin/berth)
#
# Then, where systemd is PID 1, reloads it; enable what you run, e.g.
#   systemctl enable --now berth.service
#   systemctl enable --now berth-broker.service berth-worker@h1.service
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
DEST=/etc/systemd/system
BERTH="$REPO/.venv/bin/berth"

while [ $# -gt 0 ]; do
    case "$1" in
        --dest) DEST=${2:?--dest needs a directory}; shift ;;
        --berth) BERTH=${2:?--berth needs a path}; shift ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-units.sh: unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

case "$BERTH" in
    /*) ;;
    *) echo "install-units.sh: --berth must be an absolute path, got '$BERTH'" >&2; exit 2 ;;
esac
[ -x "$BERTH" ] || { echo "install-units.sh: $BERTH is not an executable (run scripts/install.sh first)" >&2; exit 2; }

mkdir -p "$DEST"
for unit in "$REPO"/contrib/systemd/*.service; do
    name=$(basename "$unit")
    sed "s|@BERTH@|$BERTH|g" "$unit" >"$DEST/$name.tmp"
    chmod 0644 "$DEST/$name.tmp"
    mv "$DEST/$name.tmp" "$DEST/$name"
    echo "installed $DEST/$name"
done

if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [ "$DEST" = /etc/systemd/system ]; then
    systemctl daemon-reload
    echo "systemd reloaded; enable with: systemctl enable --now berth.service"
else
    echo "PID 1 is not systemd (or --dest is not the system's unit directory): nothing reloaded"
fi
