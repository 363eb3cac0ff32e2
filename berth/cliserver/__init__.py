"""The command server: a warm Python process that runs ``berth`` commands for the
small C front end (``frontend/berth.c``), so a command does not pay Python's start-up
and the CLI's imports (~80 ms) before it sends a byte.

``protocol`` is the framing both sides speak, ``stamp`` tells a server that its code
or configuration changed, ``child`` is what a forked child does with one request,
``server`` is the single-threaded accept-and-fork loop. docs/operations.md describes
it from the outside.
"""
