"""Restart policies: the pure rules and the restarter that carries them out."""
