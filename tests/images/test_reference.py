"""Image references as docker reads them (pure)."""

from __future__ import annotations

import pytest

from engine.errors import InvalidArgument
from engine.images.reference import looks_like_id, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "full", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox"),
    ("user/app", "docker.io/user/app:latest", "user/app"),
    ("quay.io/a/b:c", "quay.io/a/b:c", "quay.io/a/b"),
    ("localhost/img", "localhost/img:latest", "localhost/img"),
    ("127.0.0.1:5000/x/y:v1", "127.0.0.1:5000/x/y:v1", "127.0.0.1:5000/x/y"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", "busybox"),
    (f"r.io/a:t@{DIGEST}", f"r.io/a:t@{DIGEST}", "r.io/a"),
])
def test_references_are_completed_as_docker_does(text: str, full: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert parse_reference(full) == ref


@pytest.mark.parametrize("text", [
    "", "busybox/UPPER", "docker://busybox", "a b", "busybox:", "busybox:bad/tag",
    "busybox@sha256:short", "busybox@md5:" + "0" * 32, "-leading", "a//b", "x" * 300,
    "host:port/x",
])
def test_bad_references_are_refused_with_one_sentence(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid image reference"):
        parse_reference(text)


def test_image_ids_and_prefixes() -> None:
    assert looks_like_id("sha256:" + "a" * 64) and looks_like_id("abcd1234")
    assert not looks_like_id("abc") and not looks_like_id("busybox")
