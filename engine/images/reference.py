"""Image references as docker and podman read them: ``[DOMAIN/]PATH[:TAG][@DIGEST]``.

A short name is completed the way the docker CLI does (``busybox`` is
``docker.io/library/busybox:latest``), so one image has one name in the store
whatever form the user typed. Pure: no registry is asked anything here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID_PREFIX_RE = re.compile(r"^(?:sha256:)?[0-9a-f]{4,64}$")
MAX_REFERENCE = 255


@dataclass(frozen=True, slots=True)
class Reference:
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository: ``domain/path``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """The repository as the docker CLI shows it (``busybox``, ``quay.io/x/y``)."""
        if self.domain == DEFAULT_DOMAIN and self.path.startswith("library/"):
            return self.path[len("library/"):]
        if self.domain == DEFAULT_DOMAIN:
            return self.path
        return self.name


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return DEFAULT_DOMAIN, name


def parse_reference(text: str) -> Reference:
    """The full reference ``text`` names; InvalidArgument with one sentence if none."""
    if not isinstance(text, str) or not text or len(text) > MAX_REFERENCE:
        raise InvalidArgument(f"invalid image reference {text!r}")
    if "://" in text or any(ch.isspace() for ch in text):
        raise InvalidArgument(f"invalid image reference {text!r}: give NAME[:TAG][@DIGEST], "
                              "without a transport")
    rest, _, digest = text.partition("@")
    if digest and not DIGEST_RE.fullmatch(digest):
        raise InvalidArgument(f"invalid image reference {text!r}: the digest must be "
                              "sha256: and 64 lowercase hex digits")
    tag = ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidArgument(f"invalid image reference {text!r}: bad tag {tag!r}")
    domain, path = _split_domain(rest)
    if not _DOMAIN_RE.fullmatch(domain) or not _PATH_RE.fullmatch(path):
        raise InvalidArgument(f"invalid image reference {text!r}: a repository name is "
                              "lowercase letters, digits and separators (. _ -), in / parts")
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def looks_like_id(text: str) -> bool:
    """Could ``text`` be an image id or a prefix of one (hex, 4 digits or more)?"""
    return bool(_ID_PREFIX_RE.fullmatch(text))
