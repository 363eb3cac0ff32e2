"""The one place that runs the OCI runtime binary (runc or crun).

Every call is bounded by a timeout, and runc's stderr is sorted into typed
errors here so callers branch on types, never on message text.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import (
    BerthError,
    CommandNotFound,
    CommandNotInvokable,
    InvalidState,
    NotFound,
    PermissionDenied,
    RuntimeFailure,
    Timeout,
)
from engine.runtime.config import RuntimeConfig

_MSG_RE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
# runc's words when the process it starts cannot be run: ``exec: "CMD": REASON``.
_EXEC_RE = re.compile(r'exec: "((?:[^"\\]|\\.)*)": (.*)$')

_NOT_FOUND = ("does not exist", "container not found", "no such file or directory: container")
_PERMISSION = ("permission denied", "operation not permitted")
_STATE = (
    "not running",
    "is paused",
    "not paused",
    "is not paused",
    "cannot exec in a stopped",
    "cannot exec a container that has stopped",
    "container is stopped",
    "container not created",
    "cannot start",
    "cannot checkpoint",
    "already exists",
)


def runtime_message(stderr: str) -> str:
    """Extract the human part of runc's logrus-formatted stderr.

    logrus escapes a message's newlines (CRIU's "...\\nlog file: ...") as the two
    characters backslash and n; they become "; " so the error reads as one line."""
    found = _MSG_RE.findall(stderr)
    text = "; ".join(_unescape(m) for m in found) if found else stderr
    return " ".join(text.split())


def _unescape(message: str) -> str:
    return message.replace('\\"', '"').replace("\\n", "; ").replace("\\t", " ")


def classify(stderr: str, action: str) -> BerthError:
    """Map runc's complaint to the narrowest berth error."""
    message = runtime_message(stderr) or "no message from the runtime"
    low = message.lower()
    full = f"{action}: {message}"
    if any(s in low for s in _NOT_FOUND):
        return NotFound(full)
    if any(s in low for s in _PERMISSION):
        return PermissionDenied(full)
    if any(s in low for s in _STATE):
        return InvalidState(full)
    return RuntimeFailure(full)


def classify_start(message: str, action: str) -> BerthError:
    """Sort why a container's (or an exec's) process did not start, as podman does:
    a command that is not there (exit 127), one that cannot be invoked (exit 126),
    anything else by :func:`classify`."""
    text = runtime_message(message)
    found = _EXEC_RE.search(text)
    if found:
        command, reason = found.group(1), found.group(2).lower()
        if "not found" in reason or "no such file" in reason:
            return CommandNotFound(f"{action}: {command}: executable file not found in "
                                   "the container: the command was not found")
        if "permission denied" in reason or "is a directory" in reason \
                or "exec format error" in reason:
            return CommandNotInvokable(f"{action}: {command}: {found.group(2)}: the "
                                       "command cannot be invoked")
    return classify(message, action)


@dataclass(frozen=True)
class RuncState:
    status: str
    pid: int


class Runc:
    """Thin wrapper: argument building and error typing, no state decisions."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config

    def global_args(self, *, criu: bool = False, log: str | None = None) -> list[str]:
        args = [self.config.runtime_path, "--root", self.config.runc_root]
        if self.config.cgroup_manager == "systemd":
            args.append("--systemd-cgroup")
        if criu:
            args += ["--criu", self.config.criu_path]
        if log:
            args += ["--log", log]
        return args

    def run(
        self,
        args: Sequence[str],
        action: str,
        *,
        timeout: float | None = None,
        criu: bool = False,
        log: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = self.global_args(criu=criu, log=log) + list(args)
        limit = timeout if timeout is not None else self.config.runc_timeout
        try:
            proc = subprocess.run(  # noqa: PLW1510 - the return code is examined below
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=limit,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise Timeout(f"{action}: the runtime did not answer within {limit:g}s") from None
        except OSError as exc:
            raise RuntimeFailure(f"{action}: cannot run {argv[0]}: {exc.strerror}") from None
        if proc.returncode != 0:
            raise classify(proc.stderr.decode(errors="replace"), action)
        return proc

    def state(self, container_id: str) -> RuncState:
        proc = self.run(["state", container_id], f"getting state of container {container_id}")
        try:
            doc = json.loads(proc.stdout)
            return RuncState(str(doc["status"]), int(doc.get("pid") or 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeFailure(
                f"error decoding container status for container {container_id}: {exc}"
            ) from None
