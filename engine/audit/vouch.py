"""Writers vouch for their own rows: an Ed25519 signature on what they append.

Signed tree heads (``engine.audit.transparency``) vouch for the log up to a size; a
row appended after the newest head is vouched for by nothing, so a row forged into
the database with a valid chain hash could not be told from a real one, and the next
head would sign over it. So the process that appends a row signs it, in the same
transaction, with the auditor key that signs its heads (``BERTH_AUDIT_KEY``):

- an event row: ``b"berth event\\n" || hash``; its chain hash already binds the row's
  every column, its position and the hash before it;
- a ``commands`` row: ``b"berth outcome\\n" || outcome digest``; the digest covers every
  column, the positions of the command's events included.

That was one signature per row (revision 0005). A writer now signs once per
transaction (revision 0007), which is as strong, because the chain already binds
every row to the one before it:

- the transaction's last event row: ``b"berth txn\n" || first position (8 bytes,
  big-endian, signed) || that row's hash || sha256(the outcome digests of the
  commands the transaction records, in the order of their first events)``, stored in
  its ``signature`` column, with the first position in ``signed_from``; the rows
  before it in the transaction carry the writer's key id in ``signer`` and no
  signature, and so do its ``commands`` rows: their outcomes are folded into the
  transaction's signature (the chain does not cover the commands table, so the
  digests must be signed; one signature serves them all).

The first position is signed so that a signature cannot be stretched over rows it
never covered: strip one transaction's signature and its rows are covered by none,
though the next transaction's hash still binds them. A row slipped into a signed
transaction (the chain rehashed after it) changes its last hash, and the signature
fails; the checker names the transaction's first position, the finest a single
signature can tell.

The prefixes keep one kind from passing for another. ``signer`` holds the key id
(``engine.audit.treehead.key_id``). A writer with no key writes ``signer = ''`` and no
signature; rows written before revision 0005 hold NULL in both. Such unsigned rows
are accepted only where they open the log, before its first signed row (a log kept
before the upgrade, or before the workers were given keys): only tree heads cover
them, and ``berth audit verify`` says which positions they are. After a signed row,
or after the smallest head signed by a trusted key (a keyed writer ran by then, and
it signs every row), a row without a valid signature by a trusted key is forged:
stripping every row's signature does not make a forged append pass for an old row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from engine.audit.treehead import Signer, key_id

EVENT: Final = b"berth event\n"
OUTCOME: Final = b"berth outcome\n"
TXN: Final = b"berth txn\n"
UNSIGNED: Final = ("", b"")
"""The columns a writer with no key fills in."""


def stamp(signer: Signer | None, prefix: bytes, digest: bytes) -> tuple[str, bytes]:
    """The ``signer`` and ``signature`` columns of a row whose hash is ``digest``."""
    if signer is None:
        return UNSIGNED
    return signer.key_id, signer.sign_bytes(prefix + digest)


def txn_message(first: int, last_hash: bytes, outcomes: bytes) -> bytes:
    """What a transaction's signature signs (after ``TXN``); ``outcomes`` is the sha256
    of its commands' outcome digests, concatenated in order (``outcomes_digest``)."""
    return first.to_bytes(8, "big", signed=True) + last_hash + outcomes


def outcomes_digest(digests: list[bytes]) -> bytes:
    return hashlib.sha256(b"".join(digests)).digest()


class Trust:
    """The writers' public keys a checker trusts (each parsed once: a verify of the
    whole log checks one signature per row)."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        from nacl.signing import VerifyKey  # nacl: only to sign or verify

        # Named by the key itself: a caller's label for it is not trusted.
        self._keys = {key_id(public): VerifyKey(public) for public in keys.values()}

    def __bool__(self) -> bool:
        return bool(self._keys)

    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def problem(self, prefix: bytes, digest: bytes, signer: str | None,
                signature: Any) -> str | None:
        """Why the row is not vouched for by a trusted writer (None: it is)."""
        from nacl.exceptions import BadSignatureError  # nacl: only to sign or verify

        if not signer or not signature:
            return "carries no writer signature"
        key = self._keys.get(signer)
        if key is None:
            return f"is signed by key {signer}, which is not trusted"
        try:
            key.verify(prefix + digest, bytes(signature))
        except (BadSignatureError, ValueError, TypeError):  # TypeError: not bytes
            return f"carries a signature by key {signer} that does not verify"
        return None
