"""A real container lifecycle through conmon and runc, printed step by step.

Run with ``python -m engine.runtime.demo``. It shows what the runtime layer
does with no bus and no event log in the way: every step is a real
conmon/runc/CRIU call against a busybox container.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from engine.containers.spec import RunSpec
from engine.errors import BerthError
from engine.ids import new_container_id
from engine.images.rootfs import build_busybox_rootfs
from engine.runtime import OCIRuntime, RuntimeConfig
from engine.runtime.waits import wait_pids_exit

T = TypeVar("T")
COUNTER = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"


def _step(label: str, fn: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = fn()
    shown = result if result is not None else ""
    print(f"  {label:<44} {1000 * (time.perf_counter() - start):7.1f} ms  {shown}")
    return result


def _last_log(rt: OCIRuntime, cid: str) -> str:
    with open(rt.paths(cid).log) as f:
        lines = f.read().splitlines()
    return lines[-1].split(" ", 3)[-1] if lines else "(no output yet)"


def _wait_exit_code(rt: OCIRuntime, cid: str) -> int | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = rt.exit_status(cid)
        if status is not None:
            return status.exit_code
        time.sleep(0.01)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", default=os.environ.get("BERTH_ROOT", "/var/lib/berth") + "/demo")
    args = p.parse_args(argv)
    rootfs = build_busybox_rootfs(os.path.join(args.root, "rootfs"))
    rt = OCIRuntime(RuntimeConfig(state_dir=os.path.join(args.root, "state"),
                                  tmp_dir="/run/berth-demo"))
    cid = new_container_id()
    spec = RunSpec(rootfs=rootfs, args=("sh", "-c", COUNTER), hostname="demo")
    print(f"berth runtime demo: container {cid[:12]} from {rootfs}")
    try:
        created = _step("create through conmon (pid from sync pipe)",
                        lambda: rt.create(cid, spec, name="demo"))
        _step("runc state", lambda: rt.status(cid).status.value)
        _step("start", lambda: rt.start(cid) and None)
        time.sleep(0.7)
        _step("log (k8s-file)", lambda: _last_log(rt, cid))
        _step("exec: hostname",
              lambda: rt.exec(cid, ["hostname"], session_id="demo1").output.decode().strip())
        _step("pause", lambda: rt.pause(cid))
        _step("runc state", lambda: rt.status(cid).status.value)
        _step("unpause", lambda: rt.unpause(cid))
        _step("checkpoint (CRIU)", lambda: rt.checkpoint(cid))
        _step("log after checkpoint", lambda: _last_log(rt, cid))
        restored = _step("restore through conmon --restore",
                         lambda: rt.restore(cid, spec, name="demo"))
        time.sleep(0.7)
        _step("log after restore (counter went on)", lambda: _last_log(rt, cid))
        _step("stop (SIGTERM, then KILL after 1 s)", lambda: rt.stop(cid, restored.pid, timeout=1))
        wait_pids_exit([restored.pid, created.pid], 5)
        _step("exit code from conmon's exit file", lambda: _wait_exit_code(rt, cid))
        _step("delete", lambda: rt.delete(cid))
    except BerthError as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        try:
            rt.delete(cid, force=True)
        except BerthError:
            pass
        rt.cleanup(cid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
