"""``berth cp``: files into and out of a container, as tar.

A copy works in an ``engine.inroot.Root``: for a running container its own root
(``/proc/PID/root``, its mount namespace: volumes, tmpfs and bind mounts are seen
exactly as its processes see them, as podman's cp does), for a stopped one its root
filesystem, and on the CLI's side the host's ``/``.

Nothing is resolved on the host and then used: a container can swap any directory
of its tree with a symbolic link to a host path while a copy runs
(``renameat2(RENAME_EXCHANGE)`` in a loop). So:

- the path given is resolved by the kernel inside the root (``openat2``
  ``RESOLVE_IN_ROOT``): links are followed as the container would follow them;
- an archive is extracted through descriptors: its top-level entry is made in the
  destination directory (opened once), and each entry below it has its parent
  opened inside that top-level directory (``RESOLVE_IN_ROOT`` with it as ``/``), is
  made relative to that descriptor (``O_CREAT | O_EXCL | O_NOFOLLOW``, ``mkdirat``,
  ``symlinkat``; something in the way is removed, never written through) and has
  its mode and times set on what was opened; a hard link goes only to an entry
  below the top-level one, found the same way; there are no device files. A link
  already there, or one the archive made, leads at most elsewhere inside the copy;
- a tree is packed through descriptors: each entry opened ``O_PATH | O_NOFOLLOW``
  from its opened parent, a directory entered and a file read only through what was
  opened, and only if it is one; links are read, never followed. An entry that
  vanishes or changes kind while the tree is read is left out (tar warns likewise).

Modes are the archive's, set-id bits included, except on the host's side, where a
file a container packed must not become a set-user-id program. Files belong to the
copying user (in a container: its root, as ``docker cp`` without ``-a``).

Bounds: MAX_COPY bytes, MAX_ENTRIES entries, MAX_DEPTH directories deep. Archives
are read and written one entry at a time (``engine.containers.tarstream``): a copy holds its
archive and one descriptor per directory level, not a list of its entries.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
from collections.abc import Callable
from typing import Final

from engine.containers import tarstream as ts
from engine.errors import InvalidArgument, NotFound
from engine.inroot import Root, check_path, fchmod_nofollow, openat2, split

CHUNK: Final = 768 * 1024
"""Largest piece of a tar in one message (a bus frame holds at most 1 MiB)."""
MAX_COPY: Final = 256 * 1024 * 1024
"""Largest tar one copy carries (in pieces): it is held in the worker's memory."""
MAX_ENTRIES: Final = 1 << 19
"""Most entries in one copy: as many bare headers as MAX_COPY holds (an archive of
empty files that size takes seconds, not minutes, either way)."""
MAX_DEPTH: Final = 128
"""Most directory levels below a copy's top entry (each level read holds a
descriptor open)."""
_MAX_LINKS: Final = 40
_ENTRY_KINDS: Final = "berth cp copies files, directories, links and FIFOs"


def resolve_in_root(root: str, path: str) -> str:
    """The host path of container path ``path`` under ``root``, links followed inside
    the root (as ``chroot`` would); the last component need not exist.

    Check-then-use: the answer can be stale by the time it is used if the tree's
    owner renames things meanwhile. cp no longer uses it (everything here goes
    through ``engine.inroot``); kept for the callers that still do."""
    if not posixpath.isabs(path) or "\0" in path:
        raise InvalidArgument(f"container path {path!r} must be absolute")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_LINKS:
                raise InvalidArgument(f"too many symbolic links in {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def landing(root: Root, path: str) -> str:
    """``path`` as a copy to it lands: ending in ``/`` (into it) when it is a directory
    now, else without one (as it, renamed). Judged once, before the copy's intent is
    recorded: after a first write of ``DIR`` as ``/data/new`` that path is a
    directory, and a resend judging again would write a second copy inside it."""
    try:
        st = root.stat(check_path(path))
    except OSError as exc:
        raise InvalidArgument(f"cannot copy to {path}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        return path.rstrip("/") + "/"
    return path.rstrip("/") or "/"


def check_archive(data: bytes) -> int:
    """Refuse, before anything is recorded or written, an archive that is too big, not
    a tar, empty, of several top-level entries or too many entries, with a name that
    climbs out (``..``), a hard link to something not in it, or an entry cp does not
    carry (a device file). Returns its entries."""
    if len(data) > MAX_COPY:
        raise InvalidArgument(f"the copy is {len(data)} bytes: at most {MAX_COPY} at once")
    names = _Names(None)
    for entry in ts.entries(bytes(data)):
        names.below(entry.name)
        if entry.type == ts.HARDLINK:
            names.below(entry.linkname, entry=False)
    if names.count == 0:
        raise InvalidArgument("the archive is empty")
    return names.count


def unpack(root: Root, path: str, data: bytes, *, setid: bool = True) -> int:
    """Extract a tar of one top-level entry at ``path`` in ``root``: into it if ``path``
    ends in ``/`` (``landing``), else as it (renamed to its last component). Set-id
    bits are cleared unless ``setid``. Returns the entries written."""
    if len(data) > MAX_COPY:
        raise InvalidArgument(f"the copy is {len(data)} bytes: at most {MAX_COPY} at once")
    check_path(path)
    parent, new = split(path)
    if path.endswith("/") or not new:
        dest, new_name = _opendir(root, path), None
    else:
        dest, new_name = _opendir(root, parent), new
    try:
        return _Extraction(dest, new_name, setid, path).run(bytes(data))
    finally:
        os.close(dest)


def pack(root: Root, path: str, limit: int = MAX_COPY) -> bytes:
    """The file or directory at ``path`` in ``root`` (links followed inside it) as a
    tar holding one top-level entry named after its last component; links inside
    stay links."""
    check_path(path)
    name = split(path)[1] or "."
    try:
        source = root.open_path(path, os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"no such file or directory: {path}") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot copy {path}: {exc.strerror or exc}") from None
    packer = _Packer(limit)
    try:
        packer.top(source, name, path)
    except OSError as exc:
        raise InvalidArgument(f"cannot copy {path}: {exc.strerror or exc}") from None
    finally:
        os.close(source)
    return packer.finish()


# ------------------------------------------------------------------------ extracting

def _opendir(root: Root, path: str) -> int:
    try:
        return root.opendir(path)
    except NotFound:
        raise NotFound(f"no such directory: {path}") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot copy into {path}: {exc.strerror or exc}") from None


class _Names:
    """Where an archive's entries go: its one top-level entry (renamed to ``new`` when
    the copy lands as a new name; None: ``.``, the destination itself), and the
    components below it."""

    def __init__(self, new: str | None) -> None:
        self.new = new
        self.top: str | None = None
        self.count = 0

    def below(self, name: str, *, entry: bool = True) -> tuple[str | None, tuple[str, ...]]:
        """(the top-level entry's name, the components of ``name`` below it);
        ``entry``: the name of an entry (counted), not the target of a hard link."""
        if "\0" in name:
            raise InvalidArgument(f"the archive's entry {name!r} has a NUL in its name")
        parts = [p for p in name.split("/") if p] or ["."]
        if ".." in parts:
            raise InvalidArgument(f"the archive's entry {name!r} is outside its directory (..)")
        top, rest = parts[0], tuple(p for p in parts[1:] if p != ".")
        if self.top is None:
            self.top = top
        elif top != self.top:
            raise InvalidArgument("the archive must hold one top-level file or directory "
                                  f"(it holds {self.top!r} and {top!r})")
        if len(rest) > MAX_DEPTH:
            raise InvalidArgument(f"the archive's entry {name[:200]!r} is more than "
                                  f"{MAX_DEPTH} directories deep")
        self.count += entry
        if self.count > MAX_ENTRIES:
            raise InvalidArgument(f"the archive holds more than {MAX_ENTRIES} entries, the "
                                  "most berth cp carries at once")
        return (self.new if self.new is not None else None if top == "." else top), rest


class _Extraction:
    """One archive written at the destination directory ``dest`` (a descriptor).

    Its top-level entry is made in ``dest``; everything below it is resolved inside
    that directory (``_base``, opened ``O_NOFOLLOW`` once it is there): a link that is
    already there or that the archive made leads at most elsewhere in the copy, never
    to a sibling of it (a container's archive copied into a home directory does not
    reach ``~/.bashrc`` through a link ``top/l -> ..``).

    The directories along the last entry's path stay open (``_chain``, each a prefix
    of the next): a tar lists a directory's entries after it, so most entries cost no
    path walk at all. A directory's time is set when the archive leaves it (its
    entries change it; one an archive comes back to later keeps the later time)."""

    def __init__(self, dest: int, new: str | None, setid: bool, path: str) -> None:
        self.dest = dest
        self.names = _Names(new)
        self.special = 0o7777 if setid else 0o1777
        self.path = path
        self._base: int | None = None
        self._base_time: int | None = None
        self._chain: list[tuple[tuple[str, ...], int, int | None]] = []

    def run(self, data: bytes) -> int:
        view = memoryview(data)
        try:
            for entry in ts.entries(data):
                top, rest = self.names.below(entry.name)
                try:
                    self._one(entry, top, rest, view)
                except OSError as exc:
                    raise InvalidArgument(f"cannot copy {entry.name!r} into {self.path}: "
                                          f"{exc.strerror or exc}") from None
        finally:
            while self._chain:
                self._leave()
            if self._base is not None:
                if self._base_time is not None:
                    _set_time(self._base, self._base_time)
                if self._base != self.dest:
                    os.close(self._base)
        if not self.names.count:
            raise InvalidArgument("the archive is empty")
        return self.names.count

    def _one(self, entry: ts.Entry, top: str | None, rest: tuple[str, ...],
             data: memoryview) -> None:
        if not rest:  # the top-level entry itself, made in the destination
            if entry.type == ts.DIRECTORY:
                base = self._top(top, True)
                os.fchmod(base, entry.mode & self.special)
                self._base_time = entry.mtime
            elif top is None:
                raise InvalidArgument(f"the archive's entry {entry.name!r} is the destination "
                                      "directory itself, yet not a directory")
            else:
                self._entry(self.dest, top, entry, data)
            return
        parent = self._dir(self._top(top, False), rest[:-1])
        if entry.type == ts.DIRECTORY:
            self._directory(parent, rest, entry)
        else:
            self._entry(parent, rest[-1], entry, data)

    def _entry(self, parent: int, leaf: str, entry: ts.Entry, data: memoryview) -> None:
        if entry.type == ts.REGULAR:
            self._file(parent, leaf, entry, data[entry.offset:entry.offset + entry.size])
        elif entry.type == ts.SYMLINK:
            if "\0" in entry.linkname:
                raise InvalidArgument(f"the archive's link {entry.name!r} has a NUL in it")
            self._make(parent, leaf, lambda: os.symlink(entry.linkname, leaf, dir_fd=parent))
            _set_time_of(parent, leaf, entry.mtime)
        elif entry.type == ts.HARDLINK:
            self._hardlink(parent, leaf, entry)
        else:  # a FIFO (the reader refuses every other kind)
            self._make(parent, leaf, lambda: os.mkfifo(leaf, 0o600, dir_fd=parent))
            fchmod_nofollow(parent, leaf, entry.mode & self.special)
            _set_time_of(parent, leaf, entry.mtime)

    # -- directories: the top one made in the destination, the rest opened inside it

    def _top(self, top: str | None, listed: bool) -> int:
        """The top-level directory (the destination for ``.``), made if the archive did
        not list it first (0755, as tar makes it), opened without following a link."""
        if self._base is not None:
            return self._base
        if top is None:
            self._base = self.dest
            return self.dest
        try:
            os.mkdir(top, 0o700 if listed else 0o755, dir_fd=self.dest)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(top, dir_fd=self.dest, follow_symlinks=False).st_mode):
                self._clear(self.dest, top)  # a file or link there becomes the directory
                os.mkdir(top, 0o700 if listed else 0o755, dir_fd=self.dest)
        self._base = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=self.dest)
        return self._base

    def _dir(self, base: int, parts: tuple[str, ...]) -> int:
        """A descriptor of the directory ``parts`` below the top-level one, ``base``
        (made, 0755, if the archive does not list it before its entries, as tar does)."""
        while self._chain and parts[:len(self._chain[-1][0])] != self._chain[-1][0]:
            self._leave()
        if not parts:
            return base
        if self._chain and self._chain[-1][0] == parts:
            return self._chain[-1][1]
        try:
            fd = openat2(base, "/".join(parts), os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            above = self._dir(base, parts[:-1])
            try:
                os.mkdir(parts[-1], 0o755, dir_fd=above)
            except FileExistsError:
                pass
            fd = openat2(base, "/".join(parts), os.O_RDONLY | os.O_DIRECTORY)
        self._chain.append((parts, fd, None))
        return fd

    def _directory(self, parent: int, parts: tuple[str, ...], entry: ts.Entry) -> None:
        leaf = parts[-1]
        try:
            os.mkdir(leaf, 0o700, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(leaf, dir_fd=parent, follow_symlinks=False).st_mode):
                self._clear(parent, leaf)  # a file or link there becomes the directory
                os.mkdir(leaf, 0o700, dir_fd=parent)
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent)
        self._chain.append((parts, fd, entry.mtime))
        os.fchmod(fd, entry.mode & self.special)

    def _leave(self) -> None:
        _parts, fd, mtime = self._chain.pop()
        try:
            if mtime is not None:
                _set_time(fd, mtime)
        finally:
            os.close(fd)

    # -- files and links: made relative to their opened parent, never through a link

    def _file(self, parent: int, leaf: str, entry: ts.Entry, content: memoryview) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(leaf, flags, 0o600, dir_fd=parent)
        except FileExistsError:
            self._clear(parent, leaf)
            fd = os.open(leaf, flags, 0o600, dir_fd=parent)
        try:
            while content:
                content = content[os.write(fd, content):]
            os.fchmod(fd, entry.mode & self.special)
            _set_time(fd, entry.mtime)
        finally:
            os.close(fd)

    def _hardlink(self, parent: int, leaf: str, entry: ts.Entry) -> None:
        """A hard link to an entry below the top-level directory (its name renamed as
        the archive's are), to a file or a link, never anything else."""
        _top, target = self.names.below(entry.linkname, entry=False)
        if not target or self._base is None:
            raise InvalidArgument(f"the archive's hard link {entry.name!r} does not lead "
                                  "below its top-level directory")
        source = openat2(self._base, "/".join(target), os.O_PATH | os.O_NOFOLLOW)
        try:
            kind = os.fstat(source).st_mode
            if not (stat.S_ISREG(kind) or stat.S_ISLNK(kind)):
                raise InvalidArgument(f"the archive's hard link {entry.name!r} leads to "
                                      "something other than a file")
            self._make(parent, leaf, lambda: os.link(
                f"/proc/self/fd/{source}", leaf, dst_dir_fd=parent, follow_symlinks=True))
        finally:
            os.close(source)

    def _make(self, parent: int, leaf: str, make: Callable[[], None]) -> None:
        """``make`` the entry; if something is in the way, remove it (not a directory)
        and make it again."""
        try:
            make()
        except FileExistsError:
            self._clear(parent, leaf)
            make()

    def _clear(self, parent: int, leaf: str) -> None:
        """Remove what is at ``leaf`` (itself, never what a link leads to) so the
        archive's entry can take its place; a directory is refused (tar does too)."""
        if stat.S_ISDIR(os.stat(leaf, dir_fd=parent, follow_symlinks=False).st_mode):
            raise InvalidArgument(f"cannot copy onto {leaf!r} in {self.path}: a directory "
                                  "is there")
        os.unlink(leaf, dir_fd=parent)


def _set_time(fd: int, mtime: int) -> None:
    try:
        os.utime(fd, ns=(mtime * 1_000_000_000,) * 2)
    except (OSError, OverflowError, ValueError):
        pass  # a time the filesystem cannot hold: the entry is kept, with its own time


def _set_time_of(parent: int, leaf: str, mtime: int) -> None:
    """The time of a link or FIFO itself (``AT_SYMLINK_NOFOLLOW``)."""
    try:
        os.utime(leaf, dir_fd=parent, follow_symlinks=False,
                 ns=(mtime * 1_000_000_000,) * 2)
    except (OSError, OverflowError, ValueError):
        pass


# ------------------------------------------------------------------------ packing

class _Packer:
    """A tar written as a tree is read, refused as soon as it outgrows ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.out = io.BytesIO()  # its getvalue() hands over its buffer: no second copy
        self.entries = 0
        self._links: dict[tuple[int, int], str] = {}

    def top(self, source: int, name: str, path: str) -> None:
        """The copy's top-level entry, ``source`` (an ``O_PATH`` descriptor)."""
        st = os.fstat(source)
        if stat.S_ISDIR(st.st_mode):
            self._count()
            self._add(name, ts.DIRECTORY, st)
            self._tree(os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                               dir_fd=source), name)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            self._count()
            self._entry(source, st, name)
        else:
            raise InvalidArgument(f"{path} is a device or socket: {_ENTRY_KINDS}")

    def _tree(self, fd: int, prefix: str) -> None:
        """Every entry below the directory ``fd`` (which this closes), depth first."""
        levels = [(fd, os.scandir(fd), prefix)]
        try:
            while levels:
                parent, listing, prefix = levels[-1]
                item = next(listing, None)
                if item is None:
                    listing.close()
                    os.close(parent)
                    levels.pop()
                    continue
                self._count()
                below = self._child(parent, item.name, f"{prefix}/{item.name}")
                if below is not None:
                    if len(levels) >= MAX_DEPTH:
                        os.close(below)
                        raise InvalidArgument(f"{prefix}/{item.name} is more than "
                                              f"{MAX_DEPTH} directories deep")
                    try:
                        listing = os.scandir(below)
                    except OSError:
                        os.close(below)
                        raise
                    levels.append((below, listing, f"{prefix}/{item.name}"))
        finally:
            for parent, listing, _prefix in levels:
                listing.close()
                os.close(parent)

    def _child(self, parent: int, leaf: str, name: str) -> int | None:
        """Add the entry ``leaf`` of ``parent`` as ``name``; a directory's descriptor to
        read it next. Opened once, without following a link, and used as opened."""
        try:
            fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except FileNotFoundError:
            return None  # gone since it was listed
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                self._add(name, ts.DIRECTORY, st)
                return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(leaf, dir_fd=parent)
                except (FileNotFoundError, NotADirectoryError):
                    return None
                except OSError as exc:
                    if exc.errno == errno.EINVAL:  # no longer a link
                        return None
                    raise
                self._add(name, ts.SYMLINK, st, linkname=target)
            else:
                self._entry(fd, st, name)
            return None
        finally:
            os.close(fd)

    def _entry(self, fd: int, st: os.stat_result, name: str) -> None:
        """A regular file (read through ``fd``, ``O_PATH``) or FIFO; devices and sockets
        are left out."""
        if stat.S_ISFIFO(st.st_mode):
            self._add(name, ts.FIFO, st)
            return
        if not stat.S_ISREG(st.st_mode):
            return
        if st.st_nlink > 1:
            first = self._links.setdefault((st.st_dev, st.st_ino), name)
            if first != name:
                self._add(name, ts.HARDLINK, st, linkname=first)
                return
        self._add(name, ts.REGULAR, st, size=st.st_size)
        if st.st_size:
            self._content(fd, st.st_size)

    def _content(self, fd: int, size: int) -> None:
        """``size`` bytes of the regular file ``fd`` (``O_PATH``): reopened through
        itself, so what is read is the file that was checked; zeros if it shrank."""
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            left = size
            while left:
                chunk = os.read(reader, min(left, 1 << 20))
                if not chunk:
                    break
                self.out.write(chunk)
                left -= len(chunk)
            self.out.write(bytes(left + (-size % ts.BLOCK)))
        finally:
            os.close(reader)

    def _add(self, name: str, type_: str, st: os.stat_result, *, size: int = 0,
             linkname: str = "") -> None:
        head = ts.header(name, type_, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                         mtime=int(st.st_mtime), size=size, linkname=linkname)
        if self.out.tell() + len(head) + size + ts.BLOCK + 2 * ts.BLOCK > self.limit:
            raise InvalidArgument(f"the copy is larger than {self.limit} bytes, the most "
                                  "berth cp carries at once")
        self.out.write(head)

    def _count(self) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise InvalidArgument(f"the copy holds more than {MAX_ENTRIES} entries, the most "
                                  "berth cp carries at once")

    def finish(self) -> bytes:
        tail = ts.end_of_archive(self.out.tell())
        if self.out.tell() + len(tail) > self.limit:
            tail = bytes(2 * ts.BLOCK)
        self.out.write(tail)
        return self.out.getvalue()
