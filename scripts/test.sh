#!/usr/bin/env bash
# The README's test command: install everything (idempotent), then run the whole
# suite against real runc/conmon containers, SQLite, a PostgreSQL server that the
# fixtures start on loopback, and real ZeroMQ sockets.
#
# Run it as root, or through sudo; as another user it runs itself again through sudo.
# Arguments go to pytest (for example a test file, or -x).
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
. "$REPO/scripts/lib/common.sh"
require_root "$@"
"$REPO/scripts/install.sh"
cd "$REPO"
export BERTH_CRIU="${BERTH_CRIU:-/opt/berth/criu/bin/criu}"
exec "${BERTH_VENV:-$REPO/.venv}/bin/python" -m pytest -n "${BERTH_TEST_WORKERS:-2}" --dist loadfile -p no:cacheprovider "$@"
