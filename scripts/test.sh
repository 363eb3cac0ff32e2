#!/usr/bin/env bash
# The README's test command: install everything (idempotent), then run the whole
# suite against real runc/conmon containers, SQLite, a PostgreSQL server that the
# fixtures start on loopback, and real ZeroMQ sockets.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
"$REPO/scripts/install.sh"
cd "$REPO"
export BERTH_CRIU="${BERTH_CRIU:-/opt/berth/criu/bin/criu}"
exec "$REPO/.venv/bin/python" -m pytest -n "${BERTH_TEST_WORKERS:-2}" --dist loadfile -p no:cacheprovider "$@"
