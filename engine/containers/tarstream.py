"""Tar archives of ``berth cp``, read and written one entry at a time.

A copy's archive is untrusted (a client sent it, or a container's files made it) and
may hold half a million entries: 256 MiB of bare headers. ``tarfile`` spends tens
of µs on each header and keeps every member it has read in a list, which made such a
copy take minutes and hundreds of MiB. This reads what cp carries straight from the
bytes, entry by entry, and keeps nothing:

- POSIX ustar, GNU and v7 headers, octal or base-256 numbers, checksums checked;
- what ustar cannot hold: pax extended headers (``path``, ``linkpath``, ``size``,
  ``mtime``; the rest, owners included, is not used) and GNU long names;
- regular files, directories, symbolic and hard links, FIFOs.

Anything else is refused, never read as a regular file: device files, sparse files,
multi-volume and unknown entry types. Archives written here are ustar, with a pax
header only for what ustar cannot hold (as ``tarfile``'s PAX_FORMAT writes): any tar
reads them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Final, NamedTuple

from engine.errors import InvalidArgument

BLOCK: Final = 512
RECORD: Final = 20 * BLOCK
"""Archives written are padded to a whole record, as tar and tarfile write them."""
MAX_EXTENDED: Final = 1024 * 1024
"""Largest pax or GNU long-name header read (a path is at most 4 KiB)."""

REGULAR: Final = "0"
HARDLINK: Final = "1"
SYMLINK: Final = "2"
FIFO: Final = "6"
DIRECTORY: Final = "5"
_PAX: Final = b"x"
_PAX_GLOBAL: Final = b"g"
_GNU_NAME: Final = b"L"
_GNU_LINK: Final = b"K"
_EXTENDED: Final = (_PAX, _PAX_GLOBAL, _GNU_NAME, _GNU_LINK)
_TYPES: Final = {b"0": REGULAR, b"\0": REGULAR, b"7": REGULAR, b"1": HARDLINK,
                 b"2": SYMLINK, b"5": DIRECTORY, b"6": FIFO}
_REFUSED: Final = {b"3": "a character device", b"4": "a block device",
                   b"S": "a sparse file", b"M": "a multi-volume continuation",
                   b"V": "a volume label", b"N": "an old GNU long-name entry",
                   b"D": "a GNU dump directory"}
_USTAR: Final = b"ustar\x0000"
_USTAR_POSIX: Final = b"ustar\x00"
_HEADER: Final = struct.Struct("100s8s8s8s12s12s8sc100s6s82x155s")
"""name mode uid gid size mtime checksum type linkname magic, (version, owner names,
device numbers), prefix: one header's fields at once."""
_OCTAL_MAX: Final = {8: 0o7777777, 12: 0o77777777777}


class Entry(NamedTuple):
    """One entry of an archive; a regular file's content is ``data[offset:offset+size]``."""

    name: str
    type: str
    mode: int
    mtime: int
    """Seconds since the epoch (fractions, which only pax carries, dropped). Owners are
    not read: a copy's files belong to the copying user."""
    size: int
    linkname: str
    offset: int


def entries(data: bytes) -> Iterator[Entry]:
    """The entries of the tar ``data``, in order; InvalidArgument at the first thing
    that is not one (a damaged or truncated header, an entry type cp does not carry)."""
    pos = 0
    end = len(data)
    pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    while True:
        if pos + BLOCK > end:
            if pos == end and pos:  # no end-of-archive blocks: tar accepts that too
                return
            raise InvalidArgument("not a tar archive: it ends inside a header"
                                  if pos else "not a tar archive: it is empty")
        (name_f, mode_f, _uid, _gid, size_f, mtime_f, sum_f, kind, link_f, magic,
         prefix_f) = _HEADER.unpack_from(data, pos)
        if not name_f[0] and data[pos:pos + BLOCK] == _ZERO_BLOCK:
            if not pos:
                raise InvalidArgument("the archive is empty")
            return
        _check_sum(data[pos:pos + BLOCK], sum_f, pos)
        size = _number(size_f, pos)
        if size < 0:
            raise InvalidArgument(f"the archive's header at {pos} is damaged (size {size})")
        body = pos + BLOCK
        following = body + _padded(size)
        if kind in _EXTENDED:
            if size > MAX_EXTENDED or body + size > end:
                raise InvalidArgument(f"the archive's extended header at {pos} is damaged "
                                      "or too long")
            if kind == _PAX:
                pax.update(_pax_records(data[body:body + size], pos))
            elif kind == _GNU_NAME:
                long_name = _text(_field(data[body:body + size]))
            elif kind == _GNU_LINK:
                long_link = _text(_field(data[body:body + size]))
            pos = following  # a global pax header: nothing cp keeps (comments, charset)
            continue
        if long_name is not None:
            name = long_name
        elif magic == _USTAR_POSIX and prefix_f[0]:  # POSIX: a name may start in the prefix
            name = _text(_field(prefix_f) + b"/" + _field(name_f))
        else:
            name = _text(_field(name_f))
        name = pax.get("path", name)
        linkname = pax.get("linkpath", long_link if long_link is not None
                           else _text(_field(link_f)))
        type_ = _TYPES.get(kind)
        if type_ is None:
            what = _REFUSED.get(kind, f"of type {kind!r}")
            raise InvalidArgument(f"the archive's entry {name!r} is {what}: berth cp carries "
                                  "files, directories, links and FIFOs")
        if type_ == REGULAR and kind == b"\0" and name.endswith("/"):
            type_ = DIRECTORY  # a v7 archive's directory
        if "size" in pax:
            size = _pax_number(pax, "size", pos)
        if type_ != REGULAR:
            size = 0  # as tarfile and tar read them: no data follows other entries
        elif size < 0 or body + size > end:
            raise InvalidArgument(f"the archive is cut short inside {name!r}")
        following = body + _padded(size)
        mtime = _pax_number(pax, "mtime", pos) if "mtime" in pax else _number(mtime_f, pos)
        yield Entry(name, type_, _number(mode_f, pos) & 0o7777, mtime, size, linkname, body)
        if pax:
            pax = {}
        long_name = long_link = None
        pos = following


def header(name: str, type_: str, *, mode: int, uid: int, gid: int, mtime: int,
           size: int = 0, linkname: str = "") -> bytes:
    """The header block(s) of one entry: ustar, preceded by a pax header when a name
    or number does not fit ustar's fields."""
    raw_name = os.fsencode(name)
    raw_link = os.fsencode(linkname)
    pax: dict[str, bytes] = {}
    prefix, short = _split_name(raw_name)
    if short is None:
        pax["path"] = raw_name
        prefix, short = b"", raw_name[:100]
    if len(raw_link) > 100:
        pax["linkpath"] = raw_link
        raw_link = raw_link[:100]
    numbers = {"uid": (uid, 8), "gid": (gid, 8), "size": (size, 12), "mtime": (mtime, 12)}
    fields: dict[str, bytes] = {}
    for key, (value, width) in numbers.items():
        if 0 <= value <= _OCTAL_MAX[width]:
            fields[key] = b"%0*o\0" % (width - 1, value)
        else:
            pax[key] = b"%d" % value
            fields[key] = b"%0*o\0" % (width - 1, 0)
    block = _block(short, b"%07o\0" % (mode & 0o7777), fields["uid"], fields["gid"],
                   fields["size"], fields["mtime"], type_.encode(), raw_link, prefix)
    if not pax:
        return block
    if any(not _utf8(v) for v in pax.values()):
        pax = {"hdrcharset": b"BINARY", **pax}
    records = b"".join(_pax_record(k, v) for k, v in pax.items())
    extended = _block(b"././@PaxHeader", b"%07o\0" % 0o644, b"%07o\0" % 0, b"%07o\0" % 0,
                      b"%011o\0" % len(records), fields["mtime"], _PAX, b"", b"")
    return extended + records + bytes(_padded(len(records)) - len(records)) + block


def end_of_archive(length: int) -> bytes:
    """What closes an archive of ``length`` bytes so far: two zero blocks, then zeros to
    a whole record."""
    total = length + 2 * BLOCK
    return bytes(2 * BLOCK + (-total) % RECORD)


def padding(size: int) -> bytes:
    """The zeros after ``size`` bytes of content, to a whole block."""
    return bytes(-size % BLOCK)


# ------------------------------------------------------------------------- reading

_ZERO_BLOCK: Final = bytes(BLOCK)


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _check_sum(header: bytes, field: bytes, pos: int) -> None:
    """The header's checksum: the sum of its bytes, its own field read as spaces
    (unsigned, or signed as some old tars summed)."""
    try:
        expected = int(_field(field).strip(b" ") or b"-1", 8)
    except ValueError:
        expected = -1
    unsigned = sum(header) - sum(field) + 8 * 32
    if expected == unsigned or expected == unsigned - 256 * sum(
            1 for b in header[:148] + header[156:] if b > 127):
        return
    raise InvalidArgument("not a tar archive" if not pos else
                          f"the archive's header at {pos} is damaged (bad checksum)")


def _field(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _number(raw: bytes, pos: int) -> int:
    """A numeric field: octal digits (NUL- or space-ended), or GNU base-256."""
    if raw and raw[0] & 0x80:
        value = int.from_bytes(raw[1:], "big")
        return value - (1 << (8 * (len(raw) - 1))) if raw[0] == 0xFF else value
    digits = _field(raw).strip(b" ")
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise InvalidArgument(f"the archive's header at {pos} is damaged "
                              f"(number {digits!r})") from None


def _pax_records(raw: bytes, pos: int) -> dict[str, str]:
    """``LENGTH KEY=VALUE\\n`` records; values UTF-8 unless ``hdrcharset=BINARY``."""
    records: dict[str, bytes] = {}
    at = 0
    while at < len(raw):
        space = raw.find(b" ", at)
        try:
            length = int(raw[at:space])
        except ValueError:
            length = 0
        record = raw[at:at + length]
        if space < 0 or length <= space - at or not record.endswith(b"\n") \
                or b"=" not in record:
            raise InvalidArgument(f"the archive's pax header at {pos} is damaged")
        key, _, value = record[space - at + 1:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value
        at += length
    if any(k.startswith("GNU.sparse.") for k in records):
        raise InvalidArgument("the archive holds a sparse file: berth cp carries files, "
                              "directories, links and FIFOs")
    return {k: _text(v) for k, v in records.items()}


def _pax_number(pax: dict[str, str], key: str, pos: int) -> int:
    try:
        return int(float(pax[key])) if "." in pax[key] else int(pax[key])
    except (ValueError, OverflowError):
        raise InvalidArgument(f"the archive's pax header at {pos} has a bad "
                              f"{key} {pax[key]!r}") from None


# ------------------------------------------------------------------------- writing

def _split_name(name: bytes) -> tuple[bytes, bytes | None]:
    """(prefix, name) fields for a name; (b"", None) if ustar cannot hold it."""
    if len(name) <= 100:
        return b"", name
    cut = name.find(b"/", len(name) - 101)  # the longest last part that fits
    if 0 < cut <= 155 and cut < len(name) - 1:
        return name[:cut], name[cut + 1:]
    return b"", None


def _block(name: bytes, mode: bytes, uid: bytes, gid: bytes, size: bytes, mtime: bytes,
           type_: bytes, linkname: bytes, prefix: bytes) -> bytes:
    block = b"".join((name.ljust(100, b"\0"), mode, uid, gid, size, mtime, b" " * 8,
                      type_, linkname.ljust(100, b"\0"), _USTAR, bytes(64),
                      b"0000000\0", b"0000000\0", prefix.ljust(155, b"\0"), bytes(12)))
    checksum = b"%06o\0 " % sum(block)
    return block[:148] + checksum + block[156:]


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length = len(b"%d" % length) + len(body)
    return b"%d" % length + body
