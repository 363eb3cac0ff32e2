"""Unpack a copy's layers while skopeo is still downloading them.

skopeo's ``oci:`` destination writes each blob into a temporary file
``oci-put-blob*`` at the layout's root and, once the blob is complete and matched
its digest, renames it to ``blobs/sha256/DIGEST``. It downloads the layers side by
side, so they all complete near the end of the copy: waiting for the renames would
still unpack after the download. Instead each temporary file is read as it grows
(a read at its current end waits until more is written, and the file is complete
once its name is gone), decompressed, hashed and unpacked while the download goes
on.

Nothing unpacked here is trusted yet: it goes to a ``.tmp-`` directory in the
layers directory (swept at worker start like any unpack cut short) together with
the digests its stored and its uncompressed bytes hashed to, and the store takes it
only for a layer whose manifest digest and config diff_id both match. A layer that
failed here, or was not seen in time, is unpacked by the ordinary path after the
copy, which gives the ordinary error.

The early unpack stops when its copy stops: a copy that failed (skopeo exited with an
error, or was stopped) sets ``abort``, and every reader gives up at its next read,
not at the end of what skopeo had written, its directory removed. The other way
round, the limits (``engine.images.limits``) are watched while skopeo writes: a blob
growing past the per-layer or per-image limit, or a layer whose unpack went past
one, ends the copy (``check``, which the store hands to ``skopeo.copy`` as its
guard) instead of letting an endless blob fill the disk.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import IO, cast

from engine.images.limits import Budget, LimitExceeded, Limits, human
from engine.images.unpack import unpack_stream

TEMP_PREFIX = "oci-put-blob"
"""How skopeo names a blob it is still writing (containers/image, oci destination)."""
POLL = 0.005
"""Seconds a reader at the end of a growing file waits before it looks again."""
_GZIP_MAGIC = b"\x1f\x8b"
_TAR_MAGIC = b"ustar"
_HEAD = 262
"""Bytes enough to tell a layer (gzip, or tar's magic at 257) from a JSON blob."""


class _Aborted(Exception):
    """The copy ended before the blob did: its early unpack is dropped."""


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A layer unpacked ahead, not yet checked: where, and what its bytes hashed to."""

    tmp: str
    digest: str
    diff_id: str


class Growing:
    """A blob file still being written, read as a stream: a read at its end waits
    for more, and the end is final once the writer has renamed (or removed) it or
    has exited (``copied``); ``abort``: the copy failed, give up."""

    def __init__(self, path: str, copied: threading.Event, abort: threading.Event) -> None:
        self.path = path
        self._copied = copied
        self._abort = abort
        self._file = open(path, "rb")  # noqa: SIM115 -- closed by close()

    def read(self, size: int = -1) -> bytes:
        while True:
            if self._abort.is_set():  # the copy is over, failed: whatever is left
                raise _Aborted(self.path)
            data = self._file.read(size)
            if data:
                return data
            if not os.path.exists(self.path) or self._copied.is_set():
                return self._file.read(size)  # its last bytes were written before
            if self._abort.wait(POLL):
                raise _Aborted(self.path)

    def seek(self, offset: int) -> int:
        return self._file.seek(offset)

    def watch(self) -> int:
        """A descriptor of the same file for its size, kept after ``close``."""
        return os.dup(self._file.fileno())

    def head(self) -> bytes:
        data = b""
        while len(data) < _HEAD:
            more = self.read(_HEAD - len(data))
            if not more:
                break
            data += more
        self.seek(0)
        return data

    def close(self) -> None:
        self._file.close()


def looks_like_layer(head: bytes) -> bool:
    """A gzip stream or a tar: the manifest and the config (JSON) are left alone."""
    return head.startswith(_GZIP_MAGIC) or head[257:262] == _TAR_MAGIC


class EarlyUnpack:
    """Watches ``root`` (a staging layout skopeo copies into) and unpacks each blob
    it starts writing that is a layer, on ``workers`` threads, into ``.tmp-``
    directories under ``layers_dir``, within ``limits`` (the space charged to
    ``budget``, the copy's)."""

    def __init__(self, root: str, layers_dir: str, workers: int, limits: Limits | None = None,
                 budget: Budget | None = None) -> None:
        self.root = root
        self.layers_dir = layers_dir
        self.limits = limits or Limits()
        self.budget = budget if budget is not None else Budget(self.limits)
        self._exceeded: LimitExceeded | None = None
        self._sizes: dict[str, int] = {}
        """Descriptors of the blobs skopeo writes (by temporary name), to watch their size."""
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._stop = threading.Event()
        self._copied = threading.Event()
        self._abort = threading.Event()
        self._seen: set[str] = set()
        self._futures: list[Future[Unpacked | None]] = []
        self._blobs: list[Growing] = []
        self._tmps: list[str] = []
        self._watcher = threading.Thread(target=self._watch, name="early-unpack", daemon=True)

    def __enter__(self) -> EarlyUnpack:
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._watcher.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._abort.set()
        self._stop.set()
        self._watcher.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for blob in self._blobs:
            blob.close()
        self._close_watched()
        for tmp in self._tmps:  # what the store took was renamed away: the rest goes
            shutil.rmtree(tmp, ignore_errors=True)

    def finish(self) -> dict[str, Unpacked]:
        """The copy is over (every blob renamed into place): wait for the unpacks and
        return them by the digest their stored bytes hashed to. LimitExceeded if the
        copy or an unpack went past the limits."""
        self._copied.set()
        self._stop.set()
        self._watcher.join()
        self._close_watched()
        self.check()
        done: dict[str, Unpacked] = {}
        for future in self._futures:
            result = future.result()
            if result is not None:
                done.setdefault(result.digest, result)
        self.check()
        return done

    def check(self) -> None:
        """LimitExceeded once a blob or an unpack went past the limits (the copy's
        guard: called while skopeo runs, it ends the copy)."""
        if self._exceeded is not None:
            raise self._exceeded

    def _exceed(self, exc: LimitExceeded) -> None:
        if self._exceeded is None:
            self._exceeded = exc
        self._abort.set()  # the copy is doomed: every other unpack stops too

    def _close_watched(self) -> None:
        sizes, self._sizes = self._sizes, {}
        for fd in sizes.values():
            os.close(fd)

    def _watch_sizes(self) -> None:
        total = 0
        for fd in self._sizes.values():
            size = os.fstat(fd).st_size
            total += size
            if size > self.limits.max_stored:
                self._exceed(LimitExceeded(
                    f"a layer's blob grew past {human(self.limits.max_stored)}, this node's "
                    "limit per layer (BERTH_IMAGE_MAX_LAYER): the copy was stopped"))
        if total > self.limits.max_image:
            self._exceed(LimitExceeded(
                f"the image's blobs grew past {human(self.limits.max_image)}, this node's "
                "limit per image (BERTH_IMAGE_MAX_SIZE): the copy was stopped"))

    def _watch(self) -> None:
        while not self._stop.wait(POLL):
            self._scan()
            self._watch_sizes()

    def _scan(self) -> None:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        for name in names:
            if name in self._seen or not name.startswith(TEMP_PREFIX):
                continue
            self._seen.add(name)
            try:  # opened now: once open, its rename or a busy pool cannot lose it
                blob = Growing(os.path.join(self.root, name), self._copied, self._abort)
            except FileNotFoundError:  # complete before it was seen: the ordinary path
                continue
            self._sizes[name] = blob.watch()
            self._blobs.append(blob)
            tmp = os.path.join(self.layers_dir, f"early.tmp-{uuid.uuid4().hex[:12]}")
            self._tmps.append(tmp)
            self._futures.append(self._pool.submit(self._unpack, blob, tmp))

    def _unpack(self, blob: Growing, tmp: str) -> Unpacked | None:
        try:
            if not looks_like_layer(blob.head()):
                return None
            os.makedirs(tmp, mode=0o755)
            digest, diff_id = unpack_stream(cast(IO[bytes], blob), tmp, self.limits,
                                            self.budget)
        except LimitExceeded as exc:  # as the ordinary path would say: it need not try
            shutil.rmtree(tmp, ignore_errors=True)
            self._exceed(exc)
            return None
        except Exception:  # the ordinary path unpacks it again and reports why it fails
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        finally:
            blob.close()
        return Unpacked(tmp, digest, diff_id)
