"""Checkpoint and restore with CRIU, through runc (the dump) and conmon (the restore).

Apart from ``engine.runtime.oci`` because a dump has its own life: it runs detached
from the worker, keeps its bookkeeping (a lock, runc's stderr, its exit status) in the
image directory, and is judged afterwards, perhaps by the next worker
(``dump_report``). ``OCIRuntime`` takes these methods from ``Checkpoints``; they use
its paths, runc, configuration and ``create``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from engine.containers.spec import RunSpec
from engine.errors import InvalidArgument, NotFound, RuntimeFailure, Timeout
from engine.faults import crash_point
from engine.ids import validate_container_id
from engine.runtime import execs
from engine.runtime.config import RuntimeConfig
from engine.runtime.layout import ContainerPaths
from engine.runtime.runc import Runc, classify
from engine.runtime.types import Created, DumpReport


class Checkpoints:
    """The checkpoint and restore methods of ``OCIRuntime``."""

    config: RuntimeConfig
    runc: Runc

    if TYPE_CHECKING:  # OCIRuntime's own, which these methods use
        def paths(self, container_id: str) -> ContainerPaths: ...

        def create(self, container_id: str, spec: RunSpec, *, name: str | None = None,
                   restore_path: str | None = None, tcp_established: bool = False,
                   timeout: float | None = None) -> Created: ...

        def _clear_exit_file(self, paths: ContainerPaths) -> None: ...

    # -- checkpoint / restore --------------------------------------------------

    def checkpoint_dir(self, container_id: str, name: str) -> str:
        """The image directory of one checkpoint (``name``: its command id), so a new
        checkpoint never overwrites the image an earlier one left for restore."""
        return self.paths(container_id).checkpoint_dir(name)

    def checkpoint(
        self,
        container_id: str,
        *,
        image_path: str | None = None,
        work_path: str | None = None,
        leave_running: bool = False,
        tcp_established: bool = False,
    ) -> str:
        """Checkpoint through runc and CRIU; return the image path.

        The dump runs detached from this process's fate: runc's exit status goes to a
        file in the image directory and every process of the dump holds a lock on it,
        so a worker that dies meanwhile leaves a dump its successor can wait for and
        judge (``dump_report``) instead of a process nobody knows the end of.
        """
        cid = validate_container_id(container_id)
        paths = self.paths(cid)
        image = image_path or paths.checkpoint
        work = work_path or paths.bundle
        for label, path in (("image", image), ("work", work)):
            if not os.path.isabs(path):
                raise InvalidArgument(f"checkpoint {label} path {path!r} must be absolute")
        if not os.access(self.config.criu_path, os.X_OK):
            raise RuntimeFailure(
                f"CRIU is not available at {self.config.criu_path}: run scripts/install.sh "
                "or set BERTH_CRIU"
            )
        if image_path is None:
            shutil.rmtree(image, ignore_errors=True)
        os.makedirs(image, mode=0o700, exist_ok=True)
        args = ["checkpoint", "--image-path", image, "--work-path", work]
        if leave_running:
            args.append("--leave-running")
        if tcp_established:
            args.append("--tcp-established")
        args.append(cid)
        dump = _DumpFiles(image)
        code = dump.run(self.runc.global_args(criu=True) + args, timeout=300)
        if code != 0:
            raise classify(execs.read_tail(dump.stderr), f"checkpointing container {cid}")
        return image

    def dump_report(self, image_path: str, *, timeout: float = 300) -> DumpReport:
        """Wait (bounded) until no process of a checkpoint's dump holds its directory,
        then report how it ended: runc's exit status, and whether CRIU wrote the image."""
        dump = _DumpFiles(image_path)
        finished = dump.wait_unlocked(timeout)
        return DumpReport(finished=finished, exit_code=dump.exit_code(),
                          complete=os.path.isfile(os.path.join(image_path, "inventory.img")))

    def restore(
        self,
        container_id: str,
        spec: RunSpec,
        *,
        name: str | None = None,
        image_path: str | None = None,
        tcp_established: bool = False,
    ) -> Created:
        """Restore through conmon ``--restore``; the old runc container must be gone."""
        cid = validate_container_id(container_id)
        paths = self.paths(cid)
        image = image_path or paths.checkpoint
        if not os.path.isfile(os.path.join(image, "inventory.img")):
            raise NotFound(f"no checkpoint of container {cid} at {image}")
        try:
            self.runc.run(["delete", "--force", cid], f"deleting container {cid}")
        except NotFound:
            pass
        self._clear_exit_file(paths)
        return self.create(cid, spec, name=name, restore_path=image,
                           tcp_established=tcp_established)


class _DumpFiles:
    """The bookkeeping files of one dump, kept in its image directory: a lock every
    process of the dump inherits, runc's stderr and its exit status (written by a
    shell that outlives the worker)."""

    def __init__(self, image: str) -> None:
        self.lock = os.path.join(image, "berth-dump.lock")
        self.status = os.path.join(image, "berth-dump.status")
        self.stderr = os.path.join(image, "berth-dump.stderr")

    def run(self, argv: list[str], timeout: float) -> int:
        lock = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(self.stderr, "wb") as err:
                proc = subprocess.Popen(
                    ["sh", "-c", '"$@"; echo $? > "$0"', self.status, *argv],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    pass_fds=(lock,), start_new_session=True)
            crash_point("checkpoint.dumping")
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise Timeout(f"checkpoint did not finish within {timeout:g}s") from None
        finally:
            os.close(lock)
        crash_point("checkpoint.dumped")
        code = self.exit_code()
        return -1 if code is None else code

    def wait_unlocked(self, timeout: float) -> bool:
        try:
            lock = os.open(self.lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return True  # the dump never started
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.05)
        finally:
            os.close(lock)

    def exit_code(self) -> int | None:
        try:
            with open(self.status) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None
