"""A local stand-in for podman's system-test image (quay.io/libpod/testimage).

podman's ``test/system`` suite runs every container from that image; berth's
conformance runner (``scripts/podman-conformance.sh``) cannot pull it (no registry
access), so it builds one with the same contents the suite relies on
(``test/system/build-testimage``): a busybox userland, ``/home/podman`` holding
``testimage-id``, ``pause``, ``healthcheck`` and ``bytecheck``, working directory
``/home/podman``, the default command ``/bin/echo "This container is intended for
podman CI testing"`` and the two ``created_*`` labels. The userland comes from the
host's static busybox (``engine.images.rootfs``), written as an OCI archive so that
the image's configuration (command, working directory, labels) travels with it, and
loaded by berth's own ``image load``.

Usage: ``python bench/podman_testimage.py OUT.tar``
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile

from engine.images.rootfs import build_busybox_rootfs

PAUSE = """trap 'exit 0' SIGTERM
echo Confirmed: testimage pause invoked as $0
while :; do
    sleep 0.1
done
"""
HEALTHCHECK = """
if test -e /uh-oh || test -e /uh-oh-only-once; then
    echo "Uh-oh on stdout!"
    echo "Uh-oh on stderr!" >&2

    # Special file causes us to fail healthcheck only once
    rm -f /uh-oh-only-once

    exit 1
else
    echo "Life is Good on stdout"
    echo "Life is Good on stderr" >&2
    exit 0
fi
"""
BYTECHECK = """tmpfile=`mktemp bytecheck.XXXXXXX`

cat >$tmpfile

size=`stat -c %s $tmpfile`
hash=`md5sum <$tmpfile`
odl=`head -c8 $tmpfile | od -An -tx1`
odr=`tail -c8 $tmpfile | od -An -tx1`

rm -f $tmpfile

echo size=$size hash=$hash head=$odl tail=$odr
"""
TAG = "20241011"
NAME = f"quay.io/libpod/testimage:{TAG}"
MTIME = 1600000000


def _layer(root: str) -> bytes:
    """The rootfs as one uncompressed layer, entries sorted, times fixed: the same
    busybox gives the same image id on every run."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                info = tar.gettarinfo(path, os.path.relpath(path, root))
                info.mtime = MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def build(out: str) -> None:
    with tempfile.TemporaryDirectory(prefix="berth-testimage-") as tmp:
        root = build_busybox_rootfs(os.path.join(tmp, "rootfs"))
        home = os.path.join(root, "home", "podman")
        os.makedirs(home)
        for name, text, mode in (("testimage-id", TAG + "\n", 0o644), ("pause", PAUSE, 0o755),
                                 ("healthcheck", HEALTHCHECK, 0o755),
                                 ("bytecheck", BYTECHECK, 0o755)):
            path = os.path.join(home, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, mode)
        layer = _layer(root)
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "created": "2024-10-11T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/echo", "This container is intended for podman CI testing"],
            "WorkingDir": "/home/podman",
            "Labels": {"created_at": "2024-10-11T00:00:00Z",
                       "created_by": "test/system/build-testimage"},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "2024-10-11T00:00:00Z",
                     "created_by": "berth bench/podman_testimage.py"}],
    }, sort_keys=True).encode()
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{config_digest}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{layer_digest}", "size": len(layer)}],
    }, sort_keys=True).encode()
    manifest_digest = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": f"sha256:{manifest_digest}", "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": NAME}}],
    }).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", index),
                           (f"blobs/sha256/{config_digest}", config),
                           (f"blobs/sha256/{layer_digest}", layer),
                           (f"blobs/sha256/{manifest_digest}", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: podman_testimage.py OUT.tar")
    build(sys.argv[1])
