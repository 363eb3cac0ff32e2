"""Signed tree heads and inclusion proofs: what leaves the engine to be checked offline.

A tree head says "the log had ``size`` events and its RFC 9162 root was ``root``",
signed with an auditor's Ed25519 key (PyNaCl, i.e. libsodium). The signed message is
a C2SP-style checkpoint note, plain text, so anyone can check it with any Ed25519
tool::

    berth audit log
    <size>
    <base64 root>
    <timestamp: UTC microseconds>

The key id is the first 8 bytes of SHA-256 of the public key, in hex (CT names a log
by the hash of its key). A head made without a key has an empty key id and no
signature, and every check says it is unsigned. Nothing here touches a database:
``berth audit check-proof`` runs these functions with no engine at all.

Key files, as ``berth keys generate --role auditor NAME`` writes them:
``NAME.audit_key`` holds ``ed25519 <base64 public key>``, ``NAME.audit_key_secret``
(mode 0600) ``ed25519-secret <base64 seed>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from engine.audit import merkle
from engine.errors import InvalidArgument
from engine.privatefile import write_private

ORIGIN: Final = "berth audit log"
PUBLIC_SUFFIX: Final = ".audit_key"
SECRET_SUFFIX: Final = ".audit_key_secret"
ENV_AUDIT_KEY: Final = "BERTH_AUDIT_KEY"
"""The worker's auditor secret key file; without it, heads are made unsigned."""


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class TreeHead:
    size: int
    root: bytes
    timestamp_us: int
    key_id: str = ""
    signature: bytes = b""
    node: str = ""

    @property
    def signed(self) -> bool:
        return bool(self.signature)

    def note(self) -> bytes:
        """The bytes the signature covers."""
        root = base64.b64encode(self.root).decode()
        return f"{ORIGIN}\n{self.size}\n{root}\n{self.timestamp_us}\n".encode()

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root.hex(), "timestamp_us": self.timestamp_us,
                "key_id": self.key_id, "signature": base64.b64encode(self.signature).decode(),
                "node": self.node}

    @classmethod
    def from_json(cls, data: Any) -> TreeHead:
        try:
            head = cls(int(data["size"]), bytes.fromhex(data["root"]),
                       int(data["timestamp_us"]), str(data.get("key_id", "")),
                       base64.b64decode(data.get("signature", ""), validate=True),
                       str(data.get("node", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"not a tree head: {exc}") from None
        if head.size < 0 or len(head.root) != 32:
            raise InvalidArgument("not a tree head: bad size or root")
        return head


@dataclass(frozen=True, slots=True)
class Signer:
    """An auditor's secret key, loaded once by the worker."""

    seed: bytes
    public: bytes = field(init=False)
    key_id: str = field(init=False)
    _key: Any = field(init=False, repr=False, compare=False)
    """The expanded nacl SigningKey: made once, since writers sign every row."""

    def __post_init__(self) -> None:
        from nacl.signing import SigningKey  # nacl: only to sign or verify

        signing = SigningKey(self.seed)
        public = bytes(signing.verify_key)
        object.__setattr__(self, "_key", signing)
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "key_id", key_id(public))

    def sign_bytes(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self._key.sign(message).signature)

    def sign(self, size: int, root: bytes, timestamp_us: int, node: str = "") -> TreeHead:
        unsigned = TreeHead(size, root, timestamp_us, self.key_id, b"", node)
        return TreeHead(size, root, timestamp_us, self.key_id,
                        self.sign_bytes(unsigned.note()), node)


def signature_ok(head: TreeHead, public: bytes) -> bool:
    """True if ``head`` carries a valid signature by ``public`` (and names its key)."""
    from nacl.exceptions import BadSignatureError  # nacl: only to sign or verify
    from nacl.signing import VerifyKey  # nacl: only to sign or verify

    if not head.signed or head.key_id != key_id(public):
        return False
    try:
        VerifyKey(public).verify(head.note(), head.signature)
    except (BadSignatureError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- key files


def generate(name: str, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write NAME.audit_key and NAME.audit_key_secret (0600); never overwrites."""
    from nacl.signing import SigningKey  # nacl: only to sign or verify

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_file, secret_file = target / (name + PUBLIC_SUFFIX), target / (name + SECRET_SUFFIX)
    if public_file.exists() or secret_file.exists():
        raise InvalidArgument(f"auditor key {name!r} already exists in {target}")
    key = SigningKey.generate()
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"ed25519-secret {base64.b64encode(bytes(key)).decode()}\n")
    public_file.write_text(f"ed25519 {base64.b64encode(bytes(key.verify_key)).decode()}\n")
    return public_file, secret_file


def _read(path: str | os.PathLike[str], kind: str) -> bytes:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidArgument(f"cannot read key file {path}: {exc.strerror}") from None
    parts = text.split()
    try:
        if len(parts) == 2 and parts[0] == kind:
            value = base64.b64decode(parts[1], validate=True)
            if len(value) == 32:
                return value
    except ValueError:
        pass
    raise InvalidArgument(f"{path} is not an Ed25519 {kind.split('-')[-1]} key file")


def load_signer(path: str | os.PathLike[str]) -> Signer:
    mode = os.stat(path).st_mode & 0o077 if os.path.exists(path) else 0
    if mode:
        raise InvalidArgument(f"{path} is readable by others: chmod 600 it")
    return Signer(_read(path, "ed25519-secret"))


def load_public(path: str | os.PathLike[str]) -> bytes:
    """A public key file, or the secret file (its public half)."""
    if str(path).endswith(SECRET_SUFFIX):
        return load_signer(path).public
    return _read(path, "ed25519")


def signer_from_env(env: dict[str, str] | None = None) -> Signer | None:
    value = (os.environ if env is None else env).get(ENV_AUDIT_KEY)
    return load_signer(value) if value else None


# --------------------------------------------------------------------------- proofs


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Event ``position`` (1-based; leaf position - 1) is in the tree of ``size``: the
    leaf's bytes and its audit path. ``event`` is the row as exported, for a reader."""

    position: int
    size: int
    leaf: bytes
    path: tuple[bytes, ...]
    event: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "size": self.size, "leaf": self.leaf.hex(),
                "path": [p.hex() for p in self.path], "event": self.event}

    @classmethod
    def from_json(cls, data: Any) -> InclusionProof:
        try:
            return cls(int(data["position"]), int(data["size"]), bytes.fromhex(data["leaf"]),
                       tuple(bytes.fromhex(p) for p in data["path"]),
                       dict(data.get("event", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"not an inclusion proof: {exc}") from None


def check_proof(proof: InclusionProof, head: TreeHead, public: bytes | None) -> list[str]:
    """What is wrong with ``proof`` against ``head`` (empty: it holds)."""
    problems: list[str] = []
    if public is None:
        problems.append("no key given: the head's signature is not checked")
    elif not signature_ok(head, public):
        problems.append("the tree head's signature does not verify with the key given"
                        if head.signed else "the tree head is unsigned")
    if proof.size != head.size:
        problems.append(f"the proof is for a tree of {proof.size} events, the head of "
                        f"{head.size}")
    elif not _leaf_matches_event(proof):
        problems.append("the event shown is not the leaf the proof is for")
    elif not merkle.verify_inclusion(merkle.leaf_hash(proof.leaf), proof.position - 1,
                                     proof.size, proof.path, head.root):
        problems.append(f"event {proof.position} is not in the tree the head signs")
    return problems


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """The log of ``first`` events is a prefix of the one ``head`` signs (§2.1.4)."""

    first: int
    head: TreeHead
    path: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "consistency", "first": self.first, "head": self.head.to_json(),
                "path": [p.hex() for p in self.path]}

    @classmethod
    def from_json(cls, data: Any) -> ConsistencyProof:
        try:
            return cls(int(data["first"]), TreeHead.from_json(data["head"]),
                       tuple(bytes.fromhex(p) for p in data["path"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"not a consistency proof: {exc}") from None


def check_consistency(proof: ConsistencyProof, old: TreeHead, public: bytes) -> list[str]:
    """What is wrong with ``proof`` from the ``old`` head (empty: the log only grew)."""
    problems = []
    for name, head in (("old", old), ("new", proof.head)):
        if not signature_ok(head, public):
            problems.append(f"the {name} head's signature does not verify with the key given"
                            if head.signed else f"the {name} head is unsigned")
    if proof.first != old.size:
        problems.append(f"the proof starts at {proof.first} events, the old head has "
                        f"{old.size}")
    elif not merkle.verify_consistency(old.size, proof.head.size, old.root, proof.head.root,
                                       proof.path):
        problems.append(f"the log of {proof.head.size} events does not contain the "
                        f"{old.size} the old head signed, unchanged")
    return problems


def _leaf_matches_event(proof: InclusionProof) -> bool:
    """The leaf is ``row hash || outcome digest`` (engine.audit.transparency); the row
    hash is ``sha256(prev_hash || canonical row)``, both carried by the proof."""
    try:
        prev = bytes.fromhex(proof.event["prev_hash"])
        canonical = bytes.fromhex(proof.event["canonical"])
    except (KeyError, TypeError, ValueError):
        return False
    return hashlib.sha256(prev + canonical).digest() == proof.leaf[:32]


def dump(value: dict[str, Any], path: str | None) -> str:
    """``value`` as JSON text, also written to the private (0600) file ``path``: a
    proof carries its event row's bytes (engine.privatefile)."""
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if path:
        write_private(path, text)
    return text
