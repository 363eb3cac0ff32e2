"""podman's other spellings of the same verbs: ``container inspect`` for ``inspect``,
``container ls``/``list``/``ps`` for ``ps``, ``image list`` for ``image ls``.

podman's scripts (and its own system tests) use the ``container ...`` form as often
as the short one; rewriting the words before the parser runs keeps one parser per
verb instead of a copy under each noun. Pure: words in, words out.
"""

from __future__ import annotations

CONTAINER_VERBS = frozenset({
    "attach", "checkpoint", "cp", "create", "exec", "inspect", "kill", "logs", "pause",
    "port", "rename", "restart", "restore", "rm", "run", "start", "stats", "stop", "top",
    "unpause", "update", "wait"})
"""Verbs that ``container VERB`` names as they are; ``prune`` and ``exists`` belong to
the ``container`` command itself."""
CONTAINER_RENAMED = {"ls": "ps", "list": "ps", "ps": "ps"}
IMAGE_RENAMED = {"list": "ls"}
_TAKES_VALUE = frozenset({"--timeout", "--key", "--server-key"})


def _noun_at(argv: list[str]) -> int | None:
    """The index of the sub-command word (berth's valued global options skipped)."""
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False
        elif word in _TAKES_VALUE:
            skip = True
        elif not word.startswith("-"):
            return i
    return None


def podman_forms(argv: list[str]) -> list[str]:
    """``argv`` with podman's noun-verb spellings turned into berth's own."""
    at = _noun_at(argv)
    if at is None or at + 1 >= len(argv):
        return argv
    noun, verb = argv[at], argv[at + 1]
    if noun == "container":
        if verb in CONTAINER_VERBS:
            return argv[:at] + argv[at + 1:]
        if verb in CONTAINER_RENAMED:
            return argv[:at] + [CONTAINER_RENAMED[verb]] + argv[at + 2:]
    if noun == "image" and verb in IMAGE_RENAMED:
        return argv[:at + 1] + [IMAGE_RENAMED[verb]] + argv[at + 2:]
    return argv
