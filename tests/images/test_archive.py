"""``image load`` of an untrusted archive: its index is capped and parsed without
recursion (one sentence, never a traceback), a compressed archive is measured as it
is scanned, and an image with many names is copied by skopeo once (real archives
written by skopeo)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from typing import Any

import pytest

from engine.errors import InvalidArgument
from engine.images import build, skopeo
from engine.images.archive import read_archive
from engine.images.layout import MAX_JSON_DEPTH, Layout, json_depth, loads_json
from engine.images.limits import LimitExceeded, Limits, MiB
from engine.images.store import ImageStore
from tests.images.registry import layer

REF = "localhost/archived:1"


def _archive(tmp: str, kind: str, ref: str = REF) -> str:
    source = Layout(os.path.join(tmp, "src")).init()
    build.add_image(source, ref, [layer({"hello": b"archived\n"})])
    path = os.path.join(tmp, f"{kind}.tar")
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{source.root}:{ref}",
                    f"{kind}:{path}:{ref}"], check=True, capture_output=True, timeout=120)
    return path


def _rewrite(path: str, name: str, change: Callable[[bytes], bytes]) -> None:
    """Replace the member ``name`` of the tar at ``path`` with ``change(its content)``."""
    out = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            if member.name == name:
                data = change(data)
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if member.isreg() else None)
    with open(path, "wb") as f:
        f.write(out.getvalue())


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = skopeo.copy

    def copy(source: str, dest: str, **kw: Any) -> None:
        calls.append(source)
        real(source, dest, **kw)
    monkeypatch.setattr(skopeo, "copy", copy)
    return calls


def test_json_depth_is_counted_without_recursion_and_strings_do_not_count() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[\\"]]"}]}') == 3
    assert json_depth(b"1") == 0
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidArgument, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
        loads_json(deep, "the manifest")
    with pytest.raises(InvalidArgument, match="is not valid JSON"):
        loads_json(b"{", "the manifest")


def test_a_deep_manifest_blob_is_one_sentence(tmp_path: object) -> None:
    layout = Layout(str(tmp_path)).init()
    digest, size = layout.put_blob(b"[" * 5000 + b"]" * 5000)
    with pytest.raises(InvalidArgument, match="nests deeper"):
        layout.read_json(digest, size)


def test_a_huge_manifest_json_is_refused_unread(tmp_path: object) -> None:
    path = _archive(str(tmp_path), "docker-archive")
    _rewrite(path, "manifest.json", lambda doc: doc + b" " * (5 * MiB))
    store = ImageStore(os.path.join(str(tmp_path), "root"))
    with pytest.raises(InvalidArgument, match="manifest.json in the archive has 5 MiB, more "
                                              "than the 4 MiB"):
        store.load(path)
    assert store.layout.entries() == [] and os.listdir(store.staging_dir) == []


def test_a_deep_manifest_json_is_one_sentence(tmp_path: object) -> None:
    path = _archive(str(tmp_path), "docker-archive")
    _rewrite(path, "manifest.json", lambda _doc: b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(InvalidArgument, match="manifest.json in the archive nests deeper"):
        ImageStore(os.path.join(str(tmp_path), "root")).load(path)


@pytest.mark.parametrize("kind", ["docker-archive", "oci-archive"])
def test_an_image_with_many_names_is_copied_once(tmp_path: object, kind: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = _archive(str(tmp_path), kind)
    names = [f"localhost/many:{n}" for n in range(40)]

    def more_tags(doc: bytes) -> bytes:
        parsed = json.loads(doc)
        if kind == "docker-archive":
            parsed[0]["RepoTags"] = names
        else:
            entry = parsed["manifests"][0]
            parsed["manifests"] = [{**entry, "annotations": {build.REF_NAME: n}}
                                   for n in names]
        return json.dumps(parsed).encode()
    _rewrite(path, "manifest.json" if kind == "docker-archive" else "index.json", more_tags)
    calls = _counting(monkeypatch)
    store = ImageStore(os.path.join(str(tmp_path), "root"))
    loaded = store.load(path)
    assert len(calls) == 1
    assert sorted(i.name for i in loaded) == sorted(names)
    assert len({i.manifest_digest for i in loaded}) == 1
    for name in names:
        assert store.find(name).manifest_digest == loaded[0].manifest_digest


def test_an_untagged_docker_archive_loads_by_its_index(tmp_path: object) -> None:
    path = _archive(str(tmp_path), "docker-archive")
    _rewrite(path, "manifest.json",
             lambda doc: json.dumps([{**json.loads(doc)[0], "RepoTags": None}]).encode())
    archive = read_archive(path)
    assert [(i.source, i.tags) for i in archive.images] == [(f"docker-archive:{path}:@0", ())]
    (image,) = ImageStore(os.path.join(str(tmp_path), "root")).load(path)
    assert image.name == ""


def test_a_compressed_archive_is_measured_as_it_is_scanned(tmp_path: object) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("padding")
        info.size = 64 * MiB
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    path = os.path.join(str(tmp_path), "bomb.tar.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(buf.getvalue(), compresslevel=9))
    with pytest.raises(LimitExceeded, match="archive inflates to more than 20 times"):
        read_archive(path, Limits(max_ratio=20, ratio_floor=MiB))
    with pytest.raises(LimitExceeded, match="archive unpacks to more than 8 MiB"):
        read_archive(path, Limits(max_image=8 * MiB, max_ratio=0))
