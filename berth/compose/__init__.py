"""Compose as a library on the client side of the bus: the reconciler that converges a
project's containers (``reconciler``), the foreground ``up`` that keeps it converged
(``follow``) and the joiner of its containers' log lines (``lines``). The CLI calls
these; they call the bus client and the pure ``engine.compose``, never the CLI."""
