"""Typed image commands, parsed once from the wire (as ``engine.commands`` does for
containers). Credentials travel in the command only: nothing here or downstream
records them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from engine.command_types import (
    IMAGE_IMPORT,
    IMAGE_INSPECT,
    IMAGE_LIST,
    IMAGE_LOAD,
    IMAGE_PRUNE,
    IMAGE_PULL,
    IMAGE_PUSH,
    IMAGE_REMOVE,
    IMAGE_SAVE,
    IMAGE_TAG,
)
from engine.errors import InvalidArgument
from engine.images.archive import ARCHIVE_FORMATS
from engine.images.reference import looks_like_id, parse_reference
from engine.images.skopeo import Auth


@dataclass(frozen=True, slots=True)
class Pull:
    reference: str
    auth: Auth = field(default_factory=Auth)
    missing_only: bool = False
    """Only if the store does not have it yet (``run``'s pull policy "missing")."""


@dataclass(frozen=True, slots=True)
class ListImages:
    pass


@dataclass(frozen=True, slots=True)
class InspectImage:
    reference: str


@dataclass(frozen=True, slots=True)
class RemoveImages:
    references: tuple[str, ...]
    force: bool = False


@dataclass(frozen=True, slots=True)
class Load:
    path: str


@dataclass(frozen=True, slots=True)
class Import:
    path: str
    reference: str


@dataclass(frozen=True, slots=True)
class Save:
    reference: str
    path: str
    format: str = "docker-archive"


@dataclass(frozen=True, slots=True)
class Push:
    reference: str
    destination: str
    auth: Auth = field(default_factory=Auth)


@dataclass(frozen=True, slots=True)
class Tag:
    reference: str
    target: str


@dataclass(frozen=True, slots=True)
class Prune:
    pass


ImageCommand: TypeAlias = (
    Pull | ListImages | InspectImage | RemoveImages | Load | Import | Save | Push | Tag | Prune
)


def _text(args: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = args.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidArgument(f"{key} must be a non-empty string")
    return value


def _reference(args: Mapping[str, Any], key: str = "reference") -> str:
    """A reference or an image id (prefix) of a stored image."""
    value = _text(args, key)
    if not looks_like_id(value):
        parse_reference(value)
    return value


def _path(args: Mapping[str, Any], key: str) -> str:
    value = _text(args, key)
    if not os.path.isabs(value):
        raise InvalidArgument(f"{key} {value!r} must be an absolute path (on the worker's node)")
    return value


def _auth(args: Mapping[str, Any]) -> Auth:
    tls = args.get("tls_verify", True)
    if not isinstance(tls, bool):
        raise InvalidArgument("tls_verify must be true or false")
    authfile = args.get("authfile")
    creds = args.get("creds")
    for key, value in (("authfile", authfile), ("creds", creds)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"{key} must be a string")
    return Auth(authfile=authfile or None, creds=creds or None, tls_verify=tls).check()


def parse_image(command_type: str, args: Mapping[str, Any]) -> ImageCommand:
    """The typed image command; InvalidArgument with one sentence if not."""
    match command_type:
        case "image.pull":
            parse_reference(_text(args, "reference"))
            return Pull(_text(args, "reference"), _auth(args), bool(args.get("missing_only")))
        case "image.list":
            return ListImages()
        case "image.inspect":
            return InspectImage(_reference(args))
        case "image.remove":
            refs = args.get("references")
            if (not isinstance(refs, (list, tuple)) or not refs
                    or not all(isinstance(r, str) and r for r in refs)):
                raise InvalidArgument("give one or more images to remove")
            return RemoveImages(tuple(refs), bool(args.get("force")))
        case "image.load":
            return Load(_path(args, "path"))
        case "image.import":
            parse_reference(_text(args, "reference"))
            return Import(_path(args, "path"), _text(args, "reference"))
        case "image.save":
            fmt = args.get("format") or "docker-archive"
            if fmt not in ARCHIVE_FORMATS:
                raise InvalidArgument(f"unknown archive format {fmt!r}: use "
                                      f"{' or '.join(ARCHIVE_FORMATS)}")
            return Save(_reference(args), _path(args, "path"), fmt)
        case "image.push":
            parse_reference(_text(args, "destination"))
            return Push(_reference(args), _text(args, "destination"), _auth(args))
        case "image.tag":
            parse_reference(_text(args, "target"))
            return Tag(_reference(args), _text(args, "target"))
        case "image.prune":
            return Prune()
    raise InvalidArgument(f"unknown image command {command_type!r}")


__all__ = ["IMAGE_IMPORT", "IMAGE_INSPECT", "IMAGE_LIST", "IMAGE_LOAD", "IMAGE_PRUNE",
           "IMAGE_PULL", "IMAGE_PUSH", "IMAGE_REMOVE", "IMAGE_SAVE", "IMAGE_TAG",
           "ImageCommand", "parse_image"]
