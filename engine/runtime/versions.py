"""The versions of the binaries a node drives (runc, conmon, CRIU), for ``berth info``.

Here because runtime/ is the one place that runs them; each is asked with a short
timeout, and one that is missing or broken reads as such, never as an error.
"""

from __future__ import annotations

import subprocess
from typing import Final

from engine.runtime.config import RuntimeConfig

TIMEOUT: Final = 5.0


def first_line(argv: list[str]) -> str:
    """The first line a binary prints for its version, or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return f"not found at {argv[0]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {argv[0]}: {exc}"
    text = (done.stdout or done.stderr).strip()
    line = text.splitlines()[0] if text else ""
    return line if done.returncode == 0 else f"failed ({done.returncode}): {line}"


def versions(config: RuntimeConfig) -> dict[str, dict[str, str]]:
    return {
        "runtime": {"path": config.runtime_path,
                    "version": first_line([config.runtime_path, "--version"])},
        "conmon": {"path": config.conmon_path,
                   "version": first_line([config.conmon_path, "--version"])},
        "criu": {"path": config.criu_path,
                 "version": first_line([config.criu_path, "--version"])},
    }
