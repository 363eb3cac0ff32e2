"""How much an image may take: bounds on what a pull, load or import unpacks.

A layer is untrusted input, and a few megabytes of gzip can inflate to gigabytes (a
"decompression bomb"), or a registry can serve a blob that never ends. Every layer is
therefore streamed (never held in memory) and measured while it is unpacked:

- ``max_layer``: what one layer may take on disk once unpacked (each entry counted as
  ``du`` counts it, in whole 4 KiB blocks), and the most its uncompressed tar stream
  and its stored blob may hold;
- ``max_image``: what all the layers one pull, load or import unpacks may take
  together (a load of an archive of several images counts them together);
- ``max_ratio``: how many times its stored size a layer's tar stream may inflate to,
  once it has passed ``ratio_floor`` (small layers of empty files compress very well).

The defaults are generous but finite; ``BERTH_IMAGE_MAX_LAYER``,
``BERTH_IMAGE_MAX_SIZE`` and ``BERTH_IMAGE_MAX_RATIO`` (or ``[images]`` in
``berth.toml``) change them (docs/operations.md).
"""

from __future__ import annotations

import os
import re
import tarfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from engine.errors import InvalidArgument

GiB: Final = 1 << 30
MiB: Final = 1 << 20
BLOCK: Final = 4096
"""The unit an entry is counted in on disk (as ``du`` counts a file)."""
DEFAULT_MAX_LAYER: Final = 16 * GiB
DEFAULT_MAX_IMAGE: Final = 64 * GiB
DEFAULT_MAX_RATIO: Final = 100
RATIO_FLOOR: Final = 16 * MiB
MAX_TAR_HEADER: Final = 1 * MiB
"""The most a tar's extended header (pax, or a GNU long name or link) may hold, and
all its global pax headers together: real ones hold a few names and attributes."""
MAX_HEADER_CHAIN: Final = 8
"""Extended headers one entry may have in a row (tarfile reads them recursively)."""
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}


class LimitExceeded(InvalidArgument):
    """An image larger than this node's limits allow: nothing of it is kept."""


def human(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def parse_size(text: str, what: str) -> int:
    """Bytes from ``1073741824``, ``512M``, ``16G``, ``16GiB`` (binary units)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None or int(found.group(1)) <= 0:
        raise InvalidArgument(f"{what} must be a positive size in bytes, or with a K, M, G "
                              f"or T suffix (got {text!r})")
    return int(found.group(1)) * _UNITS[found.group(2).upper()]


@dataclass(frozen=True, slots=True)
class Limits:
    max_layer: int = DEFAULT_MAX_LAYER
    max_image: int = DEFAULT_MAX_IMAGE
    max_ratio: int = DEFAULT_MAX_RATIO
    """0: no ratio cap (the size caps still hold)."""
    ratio_floor: int = RATIO_FLOOR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        layer = env.get("BERTH_IMAGE_MAX_LAYER")
        image = env.get("BERTH_IMAGE_MAX_SIZE")
        ratio = env.get("BERTH_IMAGE_MAX_RATIO")
        max_ratio = DEFAULT_MAX_RATIO
        if ratio is not None:
            if not ratio.strip().isdigit():
                raise InvalidArgument("BERTH_IMAGE_MAX_RATIO must be a whole number (0: no "
                                      f"cap), got {ratio!r}")
            max_ratio = int(ratio)
        return cls(
            max_layer=parse_size(layer, "BERTH_IMAGE_MAX_LAYER") if layer else DEFAULT_MAX_LAYER,
            max_image=parse_size(image, "BERTH_IMAGE_MAX_SIZE") if image else DEFAULT_MAX_IMAGE,
            max_ratio=max_ratio)

    @property
    def max_stored(self) -> int:
        """The most a layer's stored blob may hold: its tar stream's cap, with room for
        gzip's own overhead on data that does not compress."""
        return self.max_layer + self.max_layer // 64 + MiB

    def layer_too_large(self) -> LimitExceeded:
        return LimitExceeded(f"a layer is larger than {human(self.max_layer)} unpacked, this "
                             "node's limit per layer (BERTH_IMAGE_MAX_LAYER)")

    def check_stream(self, plain: int, stored: int) -> None:
        """A layer's uncompressed tar stream has ``plain`` bytes so far from ``stored``
        bytes of its blob: LimitExceeded past the per-layer size or the ratio."""
        if plain > self.max_layer or stored > self.max_stored:
            raise self.layer_too_large()
        if (self.max_ratio and plain > self.ratio_floor
                and plain > self.max_ratio * max(stored, 1)):
            raise LimitExceeded(f"a layer inflates to more than {self.max_ratio} times its "
                                "compressed size (a decompression bomb?), this node's limit "
                                "(BERTH_IMAGE_MAX_RATIO)")


class Budget:
    """What one pull, load or import has unpacked so far, across its layers and
    threads; once over ``max_image`` every later charge fails too, so the other
    layers of the same image stop at their next entry."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, n: int) -> None:
        with self._lock:
            self.used += n
            over = self.used > self.limits.max_image
        if over:
            raise LimitExceeded(f"the image is larger than {human(self.limits.max_image)} "
                                "unpacked, this node's limit per image (BERTH_IMAGE_MAX_SIZE)")

    def refund(self, n: int) -> None:
        """An unpack that failed and whose directory was removed gives its space back."""
        with self._lock:
            self.used -= n

    def check_declared(self, sizes: list[int]) -> None:
        """Refuse before unpacking when the manifest's own sizes already say too much."""
        for size in sizes:
            if size > self.limits.max_stored:
                raise LimitExceeded(f"a layer's blob has {human(size)}, more than this "
                                    f"node's limit per layer ({human(self.limits.max_layer)}, "
                                    "BERTH_IMAGE_MAX_LAYER)")
        if sum(sizes) > self.limits.max_image:
            raise LimitExceeded(f"the image's layers have {human(sum(sizes))} compressed, "
                                f"more than this node's limit per image "
                                f"({human(self.limits.max_image)}, BERTH_IMAGE_MAX_SIZE)")


class Meter:
    """The space one layer takes on disk as it is unpacked, charged to its image."""

    def __init__(self, limits: Limits, budget: Budget | None) -> None:
        self.limits = limits
        self.budget = budget
        self.used = 0

    def charge(self, n: int) -> None:
        self.used += n
        if self.used > self.limits.max_layer:
            raise self.limits.layer_too_large()
        if self.budget is not None:
            self.budget.charge(n)

    def refund(self) -> None:
        if self.budget is not None:
            self.budget.refund(self.used)
        self.used = 0


def disk_cost(size: int) -> int:
    """An entry of ``size`` bytes of content as ``du`` counts it: whole blocks, one at
    least (an empty file, a directory, a link or a device still take an inode)."""
    return max(BLOCK, -(-size // BLOCK) * BLOCK)


_XGLTYPE: Final = tarfile.XGLTYPE
_EXTENDED: Final = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                    tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


class BoundedTarInfo(tarfile.TarInfo):
    """A tar entry read with its extended headers bounded: ``tarfile`` reads a pax or
    GNU long-name header whole into memory (and keeps global pax headers for the rest
    of the stream), so a hostile layer or archive declaring one of gigabytes would be
    held in memory however the stream is measured. Pass as ``tarinfo=`` to
    ``tarfile.open``; LimitExceeded for a header past ``MAX_TAR_HEADER`` or a chain of
    more than ``MAX_HEADER_CHAIN`` headers.

    Sparse entries (GNU's, in any of their formats) are refused before their map is
    read: the map is held in memory as Python numbers, tens of times the bytes it
    takes in the stream, and a streamed layer could not be unpacked with one anyway
    (the OCI image spec says layers should not have them)."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        owner = cast(Any, tar)
        if self.type not in _EXTENDED:
            owner.berth_chain = 0
            return cast(tarfile.TarInfo, super()._proc_member(tar))  # type: ignore[misc]
        chain = getattr(owner, "berth_chain", 0) + 1
        owner.berth_chain = chain
        total = self.size
        if self.type == _XGLTYPE:
            total += getattr(owner, "berth_global", 0)
            owner.berth_global = total
        if total > MAX_TAR_HEADER:
            raise LimitExceeded(f"a tar entry has extended headers of {human(total)}, more "
                                f"than the {human(MAX_TAR_HEADER)} berth reads")
        if chain > MAX_HEADER_CHAIN:
            raise LimitExceeded(f"a tar entry has more than {MAX_HEADER_CHAIN} extended "
                                "headers in a row")
        return cast(tarfile.TarInfo, super()._proc_member(tar))  # type: ignore[misc]

    def _proc_sparse(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        raise _sparse(self.name)

    def _proc_gnusparse_00(self, next: tarfile.TarInfo,  # noqa: A002
                           pax_headers: dict[str, str], *_: object) -> None:
        raise _sparse(pax_headers.get("GNU.sparse.name", next.name))

    def _proc_gnusparse_01(self, next: tarfile.TarInfo,  # noqa: A002
                           pax_headers: dict[str, str], *_: object) -> None:
        raise _sparse(pax_headers.get("GNU.sparse.name", next.name))

    def _proc_gnusparse_10(self, next: tarfile.TarInfo,  # noqa: A002
                           pax_headers: dict[str, str], *_: object) -> None:
        raise _sparse(pax_headers.get("GNU.sparse.name", next.name))


def _sparse(name: str) -> InvalidArgument:
    return InvalidArgument(f"tar entry {name[:64]!r} is a sparse file, which berth does not "
                           "take in an image (OCI layers should not have them)")
