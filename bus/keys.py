"""CURVE key files: where they live, how they are made, read and authorised.

A key pair is two files in ZeroMQ's certificate format (as ``zmq.auth`` writes
them): ``NAME.key`` holds the public key, ``NAME.key_secret`` both keys. The
broker authorises a peer by finding its public key among the ``*.key`` files of
an *authorised* directory, one for workers and one for publishers (clients and
event subscribers); the file's NAME is then the peer's identity on the bus, and
the actor recorded on its commands.

Reading keys stays cheap (the CLI's client path reads them on every ``berth ps``
over tcp): no ``zmq.auth`` import here, whose ``asyncio`` import costs ~80 ms;
only ``generate`` imports it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import zmq

from engine.errors import InvalidArgument, PermissionDenied
from engine.ids import is_node_name

DEFAULT_ROOT: Final = "/var/lib/berth"
PUBLIC_SUFFIX: Final = ".key"
SECRET_SUFFIX: Final = ".key_secret"
BROKER_KEY_NAME: Final = "broker"
WORKERS: Final = "workers"
PUBLISHERS: Final = "publishers"
AUDITORS: Final = "auditors"
"""Read-only publishers: their commands are limited to queries and audit reads."""
ROLES: Final = (WORKERS, PUBLISHERS, AUDITORS)
AUDITOR_PREFIX: Final = "auditor:"
"""How the broker names a peer whose key it found among the auditors (a key name
cannot hold a colon, so no publisher can pass for one)."""

ENV_KEY: Final = "BERTH_KEY"
"""A client's or worker's own secret key file."""
ENV_SERVER_KEY: Final = "BERTH_SERVER_KEY"
"""The broker's public key file, as a client or worker knows it."""
ENV_BROKER_KEY: Final = "BERTH_BROKER_KEY"
"""The broker's own secret key file (default ``$BERTH_ROOT/keys/broker.key_secret``)."""
ENV_AUTHORIZED: Final = {WORKERS: "BERTH_AUTHORIZED_WORKERS",
                         PUBLISHERS: "BERTH_AUTHORIZED_PUBLISHERS",
                         AUDITORS: "BERTH_AUTHORIZED_AUDITORS"}

_Z85_RE = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair as z85 text (40 bytes each), as libzmq's options take them."""

    public: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a CURVE client (a publisher, a subscriber or a worker) needs: its own
    pair, and the broker's public key, which authenticates the broker to it."""

    own: KeyPair
    server_public: bytes


# --------------------------------------------------------------------------- places


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def keys_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$BERTH_ROOT/keys``: where ``berth keys generate`` writes by default."""
    return Path(_env(env).get("BERTH_ROOT") or DEFAULT_ROOT) / "keys"


def authorized_dir(role: str, env: Mapping[str, str] | None = None) -> Path:
    """The directory of public keys the broker accepts for ``role`` (workers or
    publishers): ``$BERTH_AUTHORIZED_WORKERS``/``..._PUBLISHERS`` or under keys/."""
    if role not in ROLES:
        raise InvalidArgument(f"unknown key role {role!r}: use one of {', '.join(ROLES)}")
    value = _env(env).get(ENV_AUTHORIZED[role])
    return Path(value) if value else keys_dir(env) / "authorized" / role


def broker_key_file(env: Mapping[str, str] | None = None) -> Path:
    """The broker's secret key file: ``$BERTH_BROKER_KEY`` or keys/broker.key_secret."""
    value = _env(env).get(ENV_BROKER_KEY)
    return Path(value) if value else keys_dir(env) / f"{BROKER_KEY_NAME}{SECRET_SUFFIX}"


def validate_key_name(name: str) -> str:
    """A key's name becomes an actor in the audit log and a file name: keep it plain.
    It follows the node-name rule, since a worker's key is named after its node."""
    if not is_node_name(name):
        raise InvalidArgument(
            f"invalid key name {name!r}: use 1-63 characters from [a-zA-Z0-9_.-] "
            "starting with a letter or digit")
    return name


def needs_curve(endpoint: str) -> bool:
    """Every transport but ipc (guarded by 0600 socket files) and inproc (one
    process) crosses a network, so it must run CURVE."""
    return not endpoint.startswith(("ipc://", "inproc://"))


# --------------------------------------------------------------------------- reading


def _read_key_file(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a certificate file; a clear error if unusable."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"key file {path} does not exist "
                              "(create one with 'berth keys generate NAME')") from None
    except OSError as exc:
        raise PermissionDenied(f"cannot read key file {path}: {exc.strerror}") from None
    found: dict[bytes, bytes] = {}
    for raw in text.splitlines():
        line = raw.strip()
        for field in (b"public-key", b"secret-key"):
            if line.startswith(field) and b"=" in line:
                found[field] = line.split(b"=", 1)[1].strip(b" \t'\"")
    public, secret = found.get(b"public-key"), found.get(b"secret-key")
    for value in (public, secret):
        if value is not None and not _Z85_RE.match(value):
            raise InvalidArgument(f"key file {path} holds a malformed CURVE key")
    if public is None:
        raise InvalidArgument(f"key file {path} holds no public key")
    return public, secret


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The public key in a ``.key`` (or ``.key_secret``) file."""
    return _read_key_file(Path(path))[0]


def load_pair(path: str | os.PathLike[str]) -> KeyPair:
    """Both keys from a ``.key_secret`` file, refused (like ssh does) when anyone
    but its owner may read it: a leaked secret key is a stolen identity."""
    path = Path(path)
    public, secret = _read_key_file(path)
    if secret is None:
        raise InvalidArgument(f"key file {path} holds no secret key "
                              f"(pass the {SECRET_SUFFIX} file)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionDenied(f"secret key file {path} has mode {mode:04o}: "
                               f"it must be readable by its owner only (chmod 600 {path})")
    return KeyPair(public, secret)


def client_keys(key_file: str | os.PathLike[str],
                server_key_file: str | os.PathLike[str]) -> ClientKeys:
    """A client's keys from its secret key file and the broker's public key file."""
    return ClientKeys(load_pair(key_file), load_public(server_key_file))


def client_keys_from_env(env: Mapping[str, str] | None = None, *,
                         key_file: str | None = None,
                         server_key_file: str | None = None) -> ClientKeys | None:
    """Keys named by arguments or ``BERTH_KEY``/``BERTH_SERVER_KEY``; None when
    neither names any; an error when only one of the two is given."""
    env = _env(env)
    own = key_file or env.get(ENV_KEY)
    server = server_key_file or env.get(ENV_SERVER_KEY)
    if not own and not server:
        return None
    if not own or not server:
        missing = ENV_KEY if not own else ENV_SERVER_KEY
        raise InvalidArgument(f"CURVE needs both this peer's secret key and the broker's "
                              f"public key: {missing} (or its option) is not set")
    return client_keys(own, server)


def client_keys_for(endpoints: tuple[str, ...], *, key_file: str | None = None,
                    server_key_file: str | None = None) -> ClientKeys | None:
    """The keys for talking to ``endpoints``: None if none of them is tcp (the key
    files are not even read, so an ipc-only peer never fails on them)."""
    if not any(needs_curve(endpoint) for endpoint in endpoints):
        return None
    return client_keys_from_env(key_file=key_file, server_key_file=server_key_file)


def peer_socket(ctx: zmq.Context[Any], kind: int, endpoint: str, curve: ClientKeys | None,
                *, max_message: int) -> zmq.Socket[bytes]:
    """A socket of one of the broker's peers (client, worker, subscriber), set up the
    one way they all need: LINGER 0 so closing it to reconnect never waits on old
    messages, a message-size cap, and CURVE where the transport crosses a network.
    The caller connects it."""
    sock: zmq.Socket[bytes] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    if curve is not None and needs_curve(endpoint):
        apply_client(sock, curve)
    return sock


def apply_client(sock: zmq.Socket[Any], keys: ClientKeys) -> None:
    """Make ``sock`` a CURVE client of the broker (before ``connect``)."""
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.own.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.own.secret)
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)


def read_authorized(directory: Path) -> dict[bytes, str]:
    """Public key -> name for every well-named ``*.key`` file in ``directory``.

    Files with bad names or contents are skipped (``read_authorized_report`` says
    which); a key present under two names keeps the first name in sorted order.
    """
    return read_authorized_report(directory)[0]


def read_authorized_report(directory: Path) -> tuple[dict[bytes, str], list[str]]:
    """Like read_authorized, plus one sentence per skipped file."""
    keys: dict[bytes, str] = {}
    problems: list[str] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return keys, [f"authorised-keys directory {directory} does not exist"]
    for filename in names:
        if not filename.endswith(PUBLIC_SUFFIX):
            continue
        name = filename[: -len(PUBLIC_SUFFIX)]
        if not is_node_name(name):
            problems.append(f"skipped {directory / filename}: not a valid key name")
            continue
        try:
            public = load_public(directory / filename)
        except (InvalidArgument, PermissionDenied) as exc:
            problems.append(f"skipped {directory / filename}: {exc}")
            continue
        if public in keys:
            problems.append(f"{directory / filename} repeats the key of {keys[public]!r}")
            continue
        keys[public] = name
    return keys, problems


# --------------------------------------------------------------------------- writing


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` and its missing parents 0700 (Path.mkdir would give the
    parents the umask's mode), and make ``directory`` itself 0700."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)


def check_not_writable_by_others(directory: Path) -> None:
    """An authorised-keys directory others may write to lets them authorise themselves."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o022:
        raise PermissionDenied(f"authorised-keys directory {directory} has mode {mode:04o}: "
                               f"only its owner may write to it (chmod 700 {directory})")


def generate(name: str, directory: str | os.PathLike[str] | None = None, *,
             force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in a 0700 directory.

    The umask is tightened while zmq writes the files, so the secret key is never
    readable by others, not even for an instant. Refuses to overwrite a pair
    unless ``force``: replacing a key locks its owner out of every broker.
    """
    validate_key_name(name)
    target = Path(directory) if directory is not None else keys_dir()
    ensure_private_dir(target)
    public_file, secret_file = target / f"{name}{PUBLIC_SUFFIX}", target / f"{name}{SECRET_SUFFIX}"
    if not force and (public_file.exists() or secret_file.exists()):
        raise InvalidArgument(
            f"key {name!r} already exists in {target} (use --force to replace it)")
    import zmq.auth  # only here: it imports asyncio

    old = os.umask(0o077)
    try:
        for path in (public_file, secret_file):
            path.unlink(missing_ok=True)
        zmq.auth.create_certificates(str(target), name)
    finally:
        os.umask(old)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    return public_file, secret_file


def authorize(public_file: str | os.PathLike[str], role: str, *, name: str | None = None,
              directory: str | os.PathLike[str] | None = None) -> Path:
    """Copy a peer's public key into the broker's authorised directory for ``role``
    as ``NAME.key`` (NAME: the file's own name unless given), refusing secret keys."""
    source = Path(public_file)
    public, secret = _read_key_file(source)
    if secret is not None:
        raise InvalidArgument(f"{source} holds a secret key: authorise the public "
                              f"{PUBLIC_SUFFIX} file, and keep the secret one with its owner")
    suffixed = source.name.endswith(PUBLIC_SUFFIX)
    stem = source.name[: -len(PUBLIC_SUFFIX)] if suffixed else source.stem
    key_name = validate_key_name(name or stem)
    target = Path(directory) if directory is not None else authorized_dir(role)
    ensure_private_dir(target)
    dest = target / f"{key_name}{PUBLIC_SUFFIX}"
    if dest.exists() and load_public(dest) != public:
        raise InvalidArgument(f"{dest} already authorises another key under the name {key_name!r}")
    tmp = target / f".{key_name}{PUBLIC_SUFFIX}.tmp"
    tmp.write_bytes(b'curve\n    public-key = "' + public + b'"\n')
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
    return dest
