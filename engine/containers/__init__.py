"""A container's life: what was asked (spec), the rules (decide, projection), and the
service that carries them out."""
