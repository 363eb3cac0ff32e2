"""A real distribution registry (Debian's ``docker-registry``) on a free loopback
port, plain http or with htpasswd basic auth, and images built for it from layer
tarballs and pushed with skopeo."""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import io
import os
import secrets
import socket
import subprocess
import tarfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.images import build
from engine.images.layout import Layout
from tests.helpers import wait_until

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bcrypt_hash(password: str) -> str:
    """htpasswd's bcrypt entry through libxcrypt's crypt(3) ($2y$ is what the
    registry's htpasswd reader expects; $2b$ is the same algorithm)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    salt = "".join(secrets.choice(alphabet) for _ in range(21)) + "u"
    out = lib.crypt(password.encode(), f"$2b$05${salt}".encode())
    if not out or not out.startswith(b"$2b$"):
        raise RuntimeError("libcrypt has no bcrypt")
    return str(out.decode())


@dataclass
class Registry:
    host: str
    storage: str
    proc: subprocess.Popen[bytes]
    user: str = ""
    password: str = ""

    @property
    def creds(self) -> str:
        return f"{self.user}:{self.password}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_registry(directory: str, *, user: str = "", password: str = "") -> Registry:
    port = free_port()
    storage = os.path.join(directory, "storage")
    os.makedirs(storage, exist_ok=True)
    auth = ""
    if user:
        htpasswd = os.path.join(directory, "htpasswd")
        with open(htpasswd, "w") as f:
            f.write(f"{user}:{bcrypt_hash(password)}\n")
        auth = f"auth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n"
    config = os.path.join(directory, "config.yml")
    with open(config, "w") as f:
        f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{port}\n{auth}")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", config], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    registry = Registry(f"127.0.0.1:{port}", storage, proc, user, password)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("docker-registry exited at start")
        try:
            urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=1)
            return True
        except urllib.error.HTTPError:
            return True  # 401 with auth: it answers
        except OSError:
            return False

    try:
        wait_until(answers, 20, what="registry answering")
    except BaseException:
        registry.stop()
        raise
    return registry


def tar_directory(root: str) -> bytes:
    """A gzipped layer of a directory tree (owners, modes and links kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(root)):
            tar.add(os.path.join(root, name), arcname=name)
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


def layer(files: Mapping[str, bytes | None] = (), *,  # type: ignore[assignment]
          whiteouts: Sequence[str] = (), opaque: Sequence[str] = (),
          symlinks: Mapping[str, str] | None = None) -> bytes:
    """A gzipped layer: files (None: a directory), whiteouts of paths, opaque
    directories, symbolic links."""
    entries: dict[str, bytes | None] = dict(files)
    for path in whiteouts:
        parent, _, base = path.rpartition("/")
        entries[f"{parent}/.wh.{base}" if parent else f".wh.{base}"] = b""
    for path in opaque:
        entries[f"{path}/.wh..wh..opq"] = b""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in entries.items():
            info = tarfile.TarInfo(path)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
        for path, target in (symlinks or {}).items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return gzip.compress(buf.getvalue(), mtime=0)


def build_layout(directory: str, name: str, layers: Sequence[bytes],
                 config: Mapping[str, Any] | None = None) -> Layout:
    layout = Layout(directory).init()
    build.add_image(layout, name, layers, config)
    return layout


def push(layout: Layout, name: str, dest: str, *, all_images: bool = False,
         creds: str = "") -> None:
    argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if creds:
        argv.append(f"--dest-creds={creds}")
    if all_images:
        argv.append("--all")
    argv += [f"oci:{layout.root}:{name}", f"docker://{dest}"]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
