"""What a container's process gets besides its argv, podman's way: capabilities
(``--cap-add``/``--cap-drop``), resource limits (``--ulimit`` over podman's defaults),
a user given by name (resolved from the root filesystem's ``/etc/passwd`` and
``/etc/group``), labels, and the tiny init (``--init``: catatonit as PID 1).

Parsing and the OCI fragments are pure; :func:`resolve_user` reads the two files of
the root filesystem, the only I/O here.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import stat
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

from engine.errors import InvalidArgument, NotFound
from engine.hostfiles import read_regular
from engine.inroot import Root

MAX_ARGS: Final = 4096
MAX_ARG_BYTES: Final = 128 * 1024
"""Bounds on a process's command line (argv of a container or of an exec session):
Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN) anyway."""
_ENV_KEY_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_RE: Final = re.compile(r"^[0-9]{1,10}(:[0-9]{1,10})?$")


# --------------------------------------------------------------------------- process rules
# One set of rules for a process to run, whether it is a container's (the run spec,
# engine.containers.spec) or an exec session's: the same command line, environment, working
# directory and user are refused with the same sentence wherever they come from.


def check_argv(argv: Sequence[object], what: str = "the command") -> tuple[str, ...]:
    """A non-empty list of strings, no NUL byte, within the kernel's bounds."""
    if isinstance(argv, str) or not all(isinstance(a, str) for a in argv):
        raise InvalidArgument(f"{what} must be a list of strings")
    args = tuple(str(a) for a in argv)
    if not args or not args[0]:
        raise InvalidArgument(f"{what} is empty: name a program to run")
    if len(args) > MAX_ARGS or sum(len(a.encode(errors="surrogateescape")) for a in args) \
            > MAX_ARG_BYTES:
        raise InvalidArgument(f"{what} is too long (at most {MAX_ARGS} arguments and "
                              f"{MAX_ARG_BYTES // 1024} KiB)")
    if any("\0" in a for a in args):
        raise InvalidArgument(f"{what} contains a NUL byte")
    return args


def check_env(env: Sequence[object]) -> tuple[str, ...]:
    """KEY=VALUE entries with a shell-style KEY, no NUL byte."""
    if isinstance(env, str) or not all(isinstance(e, str) for e in env):
        raise InvalidArgument("the environment must be a list of KEY=VALUE strings")
    entries = tuple(str(e) for e in env)
    if sum(len(e) for e in entries) > MAX_ARG_BYTES:
        raise InvalidArgument(f"the environment is too long (at most {MAX_ARG_BYTES // 1024} KiB)")
    for item in entries:
        key, sep, _ = item.partition("=")
        if not sep or not _ENV_KEY_RE.fullmatch(key) or "\0" in item:
            raise InvalidArgument(f"invalid environment entry {item!r}: use KEY=VALUE")
    return entries


def check_cwd(cwd: object, *, optional: bool = False) -> str:
    """An absolute path with no NUL byte (``optional``: or empty, the default)."""
    if optional and cwd == "":
        return ""
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or "\0" in cwd or len(cwd) > 4096:
        raise InvalidArgument(f"working directory {cwd!r} must be an absolute path")
    return cwd


def check_user(user: object, *, optional: bool = False) -> str:
    """``UID[:GID]`` in numbers (``optional``: or empty, the container's user)."""
    if optional and user == "":
        return ""
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise InvalidArgument(f"invalid user {user!r}: use UID[:GID] (numbers)")
    return user


INIT_PATH: Final = os.environ.get("BERTH_INIT_PATH", "/usr/bin/catatonit")
"""The host's init binary, bind-mounted read-only into a container run with ``--init``."""
INIT_IN_CONTAINER: Final = "/dev/init"
"""Where it is mounted: on the container's own /dev tmpfs, so the mount point is never
made in the root filesystem (podman's /run/podman-init is on its overlay; berth may
run on the user's own directory, which must stay untouched)."""

ALL_CAPS: Final = (
    "CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER", "CAP_FSETID", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_MKNOD", "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT", "CAP_SYS_MODULE", "CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
)

RLIMITS: Final = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                  "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
UNLIMITED: Final = 2**64 - 1
DEFAULT_ULIMITS: Final = (("nofile", 1048576, 1048576), ("nproc", 4194304, 4194304))
"""podman's defaults for a root container: many open files, many processes."""


class Ulimit(NamedTuple):
    name: str
    soft: int
    hard: int


DEFAULT_ULIMITS_OBJECTS: Final = tuple(Ulimit(*u) for u in DEFAULT_ULIMITS)


def normalize_cap(name: str) -> str:
    """``net_admin``, ``NET_ADMIN`` or ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``ALL`` stays."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def check_caps(caps: Iterable[str], what: str) -> None:
    for cap in caps:
        if cap != "ALL" and cap not in ALL_CAPS:
            raise InvalidArgument(f"invalid capability {cap!r} in {what}: use a name such as "
                                  "CAP_NET_ADMIN (or ALL)")


def capabilities(default: Sequence[str], add: Iterable[str], drop: Iterable[str]) -> list[str]:
    """The capability set: podman's defaults, plus ``add``, minus ``drop`` (``ALL`` in
    either means every capability; an explicit add wins over ``--cap-drop ALL``)."""
    add, drop = set(add), set(drop)
    caps = set(ALL_CAPS) if "ALL" in add else set(default) | add
    if "ALL" in drop:
        caps = add - {"ALL"}
    return sorted(caps - (drop - {"ALL"}))


def parse_ulimit(text: str) -> Ulimit:
    """``nofile=1024[:2048]`` (-1 for unlimited) as podman's ``--ulimit``."""
    name, sep, values = text.partition("=")
    soft_text, _, hard_text = values.partition(":")
    try:
        if not sep or name not in RLIMITS:
            raise ValueError
        soft = _limit(soft_text)
        hard = _limit(hard_text) if hard_text else soft
    except ValueError:
        raise InvalidArgument(f"invalid ulimit {text!r}: use NAME=SOFT[:HARD] with NAME one of "
                              f"{', '.join(RLIMITS)}") from None
    if soft > hard:
        raise InvalidArgument(f"invalid ulimit {text!r}: the soft limit exceeds the hard one")
    return Ulimit(name, soft, hard)


def _limit(text: str) -> int:
    value = int(text)
    if value == -1:
        return UNLIMITED
    if value < 0:
        raise ValueError
    return value


def check_ulimits(ulimits: Sequence[Ulimit]) -> None:
    seen: set[str] = set()
    for u in ulimits:
        if u.name not in RLIMITS or not 0 <= u.soft <= u.hard <= UNLIMITED:
            raise InvalidArgument(f"invalid ulimit {u.name}={u.soft}:{u.hard}")
        if u.name in seen:
            raise InvalidArgument(f"ulimit {u.name} is given twice")
        seen.add(u.name)


@functools.lru_cache(maxsize=1)
def default_ulimits() -> tuple[Ulimit, ...]:
    """podman's defaults, lowered to this process's hard limits when it cannot raise
    them (no CAP_SYS_RESOURCE, as in some sandboxes), as podman does rootless: runc
    would otherwise refuse to create every container."""
    if _holds_sys_resource():
        return tuple(Ulimit(*u) for u in DEFAULT_ULIMITS)
    out = []
    for name, soft, hard in DEFAULT_ULIMITS:
        ceiling = resource.getrlimit(_RESOURCE[name])[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        out.append(Ulimit(name, soft, hard))
    return tuple(out)


_RESOURCE: Final = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}
_CAP_SYS_RESOURCE: Final = 24


def _holds_sys_resource() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    except OSError:
        pass
    return False


def rlimits(ulimits: Sequence[Ulimit],
            defaults: Sequence[Ulimit] = DEFAULT_ULIMITS_OBJECTS) -> list[dict[str, Any]]:
    """The OCI ``process.rlimits``: the defaults, overridden by ``--ulimit``."""
    chosen = {name: (soft, hard) for name, soft, hard in defaults}
    chosen.update({u.name: (u.soft, u.hard) for u in ulimits})
    return [{"type": f"RLIMIT_{name.upper()}", "soft": soft, "hard": hard}
            for name, (soft, hard) in sorted(chosen.items())]


def check_labels(labels: Sequence[tuple[str, str]]) -> None:
    for key, value in labels:
        if not isinstance(key, str) or not key or "=" in key or not isinstance(value, str):
            raise InvalidArgument(f"invalid label {key!r}: use KEY=VALUE with a non-empty key")


MAX_ENV_FILE_BYTES: Final = 1024 * 1024
"""An env file holds at most 128 KiB of environment (``MAX_ARG_BYTES``),
comments aside: a bigger one is a mistake, and is not read into memory."""


def read_env_file(path: str, name: str) -> str:
    """The text of an env file: a regular file (never a FIFO or a device) of at most
    ``MAX_ENV_FILE_BYTES``, UTF-8 (a byte order mark dropped), without NUL; ``name``
    says which in a refusal."""
    raw = read_regular(path, MAX_ENV_FILE_BYTES, name)
    if b"\0" in raw:
        raise InvalidArgument(f"{name} holds a NUL byte")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # an editor's byte order mark
    except UnicodeDecodeError:
        raise InvalidArgument(f"{name} is not UTF-8") from None


def parse_env_file(text: str, path: str) -> list[str]:
    """podman's ``--env-file`` (and Compose's ``env_file``): KEY=VALUE lines, the value
    as written; blank lines and ``#`` comments skipped; a bare KEY takes the value it has
    in the caller's environment (dropped if unset). A line whose KEY is not a variable
    name (``check_env``'s rule) is refused by its number alone: the
    line may be a secret (a password file named by mistake) and is never repeated."""
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.rstrip()
        try:
            check_env([f"{key}=x"])
        except InvalidArgument:
            raise InvalidArgument(f"invalid line {number} in env file {path}: use KEY=VALUE "
                                  "with KEY a variable name") from None
        if sep:
            out.append(f"{key}={value}")
        elif key in os.environ:
            out.append(f"{key}={os.environ[key]}")
    return out


# --------------------------------------------------------------------------- users

_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")
_ID_RE: Final = re.compile(r"^[0-9]{1,10}$")
USER_FILE_LIMIT: Final = 4 << 20
"""Largest ``/etc/passwd`` or ``/etc/group`` read from a container (bytes)."""


def is_user_form(user: str) -> bool:
    """``UID[:GID]`` or ``NAME[:GROUP]``, each part a number or a name."""
    parts = user.split(":")
    return 1 <= len(parts) <= 2 and all(_ID_RE.fullmatch(p) or _NAME_RE.fullmatch(p)
                                        for p in parts)


class ResolvedUser(NamedTuple):
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


def _entries(root: Root | None, path: str) -> list[list[str]]:
    """The lines of the container's file ``path``, split at colons; none if it has no
    such file. Anything else than a regular file there is refused unopened: a FIFO
    would block its reader for ever (runc's init opens both files of every container
    it starts, and would hang the create)."""
    if root is None:
        return []
    try:
        found = root.stat(path)
        if found is None:
            return []
        if not stat.S_ISREG(found.st_mode):
            raise InvalidArgument(f"the container's {path} is not a regular file")
        # read_regular checks the file it opens again: one swapped in since is refused
        text = root.read_regular(path, USER_FILE_LIMIT)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path} in the container: {exc.strerror}") from None
    if text is None:
        return []
    lines = text.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return [line.split(":") for line in lines.split("\n")
            if line.strip() and not line.startswith("#")]


def resolve_user(rootfs: str, user: str) -> ResolvedUser:
    """The user of ``NAME[:GROUP]`` or ``UID[:GID]`` in the container's own files, as
    podman does: a name must be in ``ROOTFS/etc/passwd`` (its primary group unless one
    is given), a group name in ``ROOTFS/etc/group``; the groups listing the user are
    its additional groups."""
    name, _, group = user.partition(":")
    try:
        root: Root | None = Root.open(rootfs)
    except (NotFound, NotADirectoryError):
        root = None
    try:  # both read inside the root filesystem: a link there cannot reach the host's
        passwd = _entries(root, "/etc/passwd")
        groups = _entries(root, "/etc/group")
    finally:
        if root is not None:
            root.close()
    login: str | None = None
    if _ID_RE.fullmatch(name):
        uid, gid = int(name), 0
        for entry in passwd:
            if len(entry) >= 4 and entry[2] == name:
                login, gid = entry[0], int(entry[3]) if _ID_RE.fullmatch(entry[3]) else 0
                break
    else:
        found = next((e for e in passwd if len(e) >= 4 and e[0] == name), None)
        if found is None or not _ID_RE.fullmatch(found[2]) or not _ID_RE.fullmatch(found[3]):
            raise InvalidArgument(f"user {name!r} is not in the container's /etc/passwd")
        login, uid, gid = name, int(found[2]), int(found[3])
    if group:
        if _ID_RE.fullmatch(group):
            gid = int(group)
        else:
            named = [g for g in groups
                     if len(g) >= 3 and g[0] == group and _ID_RE.fullmatch(g[2])]
            if not named:
                raise InvalidArgument(f"group {group!r} is not in the container's /etc/group")
            gid = int(named[0][2])
    extra: tuple[int, ...] = ()
    if login is not None:
        extra = tuple(sorted({int(g[2]) for g in groups if len(g) >= 4 and _ID_RE.fullmatch(g[2])
                              and login in g[3].split(",") and int(g[2]) != gid}))
    return ResolvedUser(uid, gid, extra)
