#!/usr/bin/env bash
# The README's main-job command: install everything (idempotent), then run the
# main job on the embedded default.
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
"$REPO/scripts/install.sh"
exec "$REPO/.venv/bin/python" -m engine.runtime.demo "$@"
