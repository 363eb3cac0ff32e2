"""Proof that the log was not altered: the hash chain, the Merkle tree, signed tree
heads, offline exports."""
