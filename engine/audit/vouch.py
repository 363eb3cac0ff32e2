"""Writers vouch for their own rows: an Ed25519 signature on every row they append.

Signed tree heads (``engine.audit.transparency``) vouch for the log up to a size; a
row appended after the newest head is vouched for by nothing, so a row forged into
the database with a valid chain hash could not be told from a real one, and the next
head would sign over it. So the process that appends a row signs it, in the same
transaction, with the auditor key that signs its heads (``BERTH_AUDIT_KEY``):

- an event row: ``b"berth event\\n" || hash``; its chain hash already binds the row's
  every column, its position and the hash before it;
- a ``commands`` row: ``b"berth outcome\\n" || outcome digest``; the digest covers every
  column, the positions of the command's events included.

The prefixes keep one kind from passing for the other. ``signer`` holds the key id
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

from collections.abc import Mapping
from typing import Any, Final

from engine.audit.treehead import Signer, key_id

EVENT: Final = b"berth event\n"
OUTCOME: Final = b"berth outcome\n"
UNSIGNED: Final = ("", b"")
"""The columns a writer with no key fills in."""


def stamp(signer: Signer | None, prefix: bytes, digest: bytes) -> tuple[str, bytes]:
    """The ``signer`` and ``signature`` columns of a row whose hash is ``digest``."""
    if signer is None:
        return UNSIGNED
    return signer.key_id, signer.sign_bytes(prefix + digest)


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
        except (BadSignatureError, ValueError):
            return f"carries a signature by key {signer} that does not verify"
        return None
