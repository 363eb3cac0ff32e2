#!/usr/bin/env bash
# Mutation testing of berth's pure core: does the fast unit suite notice when the
# rules change?
#
# mutmut (configured in pyproject.toml, [tool.mutmut]) makes small changes to the
# modules listed in `only_mutate` there (decide, projection, commands, the audit
# chain, the broker's routing, the wire protocol) and runs, for each change, the
# fast unit tests that reach the changed function. A change the tests do not notice
# "survives". This script prints the killed share per module and overall and exits 1
# when the overall share is below BERTH_MUTATION_THRESHOLD (percent).
#
# The tests run with the `mutation` hypothesis profile (tests/budget.py): a tenth of
# the examples, derandomized, so a mutant's verdict does not change between runs.
# No container, no PostgreSQL: the store tests run on SQLite only.
#
# Mutants the tests cannot kill because they do not change behaviour are listed,
# with the reason, in tests/mutation-equivalents.md; they count as survivors here
# (the threshold leaves room for them: 2557 of 2598 killed, 98.4%, with every
# survivor listed there as equivalent).
#
# Cost: 2598 mutants in 3-6 minutes on a 2-core machine shared with other test
# runs (about 3 CPU-minutes): mutmut forks one process per mutant and runs only the
# tests that reach the mutated function, two at a time.
#
# Usage: scripts/mutation.sh            (a fresh run; takes some minutes on 2 cores)
#        scripts/mutation.sh --report   (only print the scores of the last run)
# Then:  .venv/bin/mutmut results       (the survivors)
#        .venv/bin/mutmut show NAME     (one mutant's diff)
set -euo pipefail
REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${BERTH_VENV:-$REPO/.venv}
THRESHOLD=${BERTH_MUTATION_THRESHOLD:-97}
cd "$REPO"

if [ "${1:-}" != "--report" ]; then
    # mutmut keeps verdicts in mutants/ and reuses them; CI and a developer alike
    # want the verdicts of the code as it is now.
    rm -rf mutants
    mkdir mutants
    start=$SECONDS
    # Its progress line redraws itself thousands of times: keep it out of CI's log.
    BERTH_HYPOTHESIS_PROFILE=mutation "$VENV/bin/mutmut" run >mutants/run.log 2>&1 || {
        tail -n 40 mutants/run.log >&2
        echo "mutation: mutmut run failed (log: $REPO/mutants/run.log)" >&2
        exit 1
    }
    echo "mutation: run took $((SECONDS - start))s" >&2
fi

exec "$VENV/bin/python" - "$THRESHOLD" <<'EOF'
"""Per-module and overall killed share from mutmut's verdict files."""

import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

threshold = float(sys.argv[1])
rows = []
totals = {"killed": 0, "survived": 0, "other": 0}
for meta in sorted(Path("mutants").rglob("*.py.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"].values()
    counts = {"killed": 0, "survived": 0, "other": 0}
    for code in codes:
        status = status_by_exit_code[code]
        # A mutant that hangs the tests (timeout) is noticed as surely as a failure.
        if status in ("killed", "timeout"):
            counts["killed"] += 1
        elif status == "survived":
            counts["survived"] += 1
        else:  # no tests reach it, suspicious, not checked: not killed either
            counts["other"] += 1
    rows.append((str(meta.relative_to("mutants"))[: -len(".meta")], counts))
    for key in totals:
        totals[key] += counts[key]
if not rows:
    sys.exit("mutation: no verdicts in mutants/ (run without --report first)")


def line(name: str, c: dict[str, int]) -> str:
    total = sum(c.values())
    share = 100.0 * c["killed"] / total if total else 100.0
    return (f"{name:<24} {c['killed']:>6} {c['survived']:>8} {c['other']:>6} {total:>6}"
            f" {share:>7.1f}%")


print(f"{'module':<24} {'killed':>6} {'survived':>8} {'other':>6} {'total':>6} {'score':>8}")
for name, counts in rows:
    print(line(name, counts))
print(line("overall", totals))
total = sum(totals.values())
score = 100.0 * totals["killed"] / total if total else 100.0
if score < threshold:
    print(f"mutation: {score:.1f}% killed is below the threshold of {threshold:.1f}%; "
          "see `mutmut results` for the survivors", file=sys.stderr)
    sys.exit(1)
print(f"mutation: {score:.1f}% killed (threshold {threshold:.1f}%)")
EOF
