"""The one place that runs ``skopeo``, the image copier of podman's own stack.

Copying through skopeo means users' ``registries.conf``, ``policy.json``, mirrors and
``auth.json`` work as they do for podman. Credentials given on berth's command line
are never put on skopeo's (any user can read a process's arguments): they go into a
private, temporary auth file that is removed as soon as the copy ends.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from engine.errors import BerthError, InvalidArgument, NotFound, PermissionDenied, RuntimeFailure

DEFAULT_SKOPEO = "/usr/bin/skopeo"
PLATFORM = ("linux", "amd64")
"""A multi-platform index resolves to this platform's image."""
GUARD_INTERVAL = 0.1
"""Seconds between two calls of a copy's guard while skopeo runs."""
_DIGEST_ERROR = re.compile(r"digest did not match|digests? .*(?:mismatch|do not match)"
                           r"|does not match (?:the )?digest", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Auth:
    """How to reach one registry: an auth file, credentials, TLS verification."""

    authfile: str | None = None
    creds: str | None = None
    """``USER:PASSWORD``; never logged, never recorded."""
    tls_verify: bool = True

    def __repr__(self) -> str:  # never show the credentials
        return (f"Auth(authfile={self.authfile!r}, creds={'***' if self.creds else None}, "
                f"tls_verify={self.tls_verify})")

    def check(self) -> Auth:
        if self.authfile is not None and not os.path.isfile(self.authfile):
            raise InvalidArgument(f"auth file {self.authfile!r} does not exist")
        if self.creds is not None and (":" not in self.creds or self.creds.startswith(":")):
            raise InvalidArgument("credentials must be given as USERNAME:PASSWORD")
        return self


class DigestError(InvalidArgument):
    """The registry served content that does not match its digest."""


def skopeo_path() -> str:
    return shutil.which("skopeo") or DEFAULT_SKOPEO


@contextmanager
def _auth_args(side: str, auth: Auth | None, registry: str) -> Iterator[list[str]]:
    """skopeo's options for one side (``src`` or ``dest``) of a copy."""
    if auth is None:
        yield []
        return
    args = [f"--{side}-tls-verify={'true' if auth.tls_verify else 'false'}"]
    if auth.creds is None:
        if auth.authfile:
            args.append(f"--{side}-authfile={auth.authfile}")
        yield args
        return
    token = base64.b64encode(auth.creds.encode()).decode()
    with tempfile.TemporaryDirectory(prefix="berth-auth-") as tmp:
        path = os.path.join(tmp, "auth.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {registry: {"auth": token}}}, f)
        yield [*args, f"--{side}-authfile={path}"]


def copy(source: str, dest: str, *, src: Auth | None = None, dst: Auth | None = None,
         registry: str = "", all_images: bool = False, timeout: float = 3600,
         extra: Sequence[str] = (), guard: Callable[[], None] | None = None) -> None:
    """``skopeo copy SOURCE DEST`` (transport:reference on both sides); a typed error
    with skopeo's own sentence if it fails. ``registry``: the host the credentials
    of ``src``/``dst`` are for. ``guard`` is called every ``GUARD_INTERVAL`` seconds
    while skopeo runs: whatever it raises ends the copy (skopeo is killed and
    reaped) and is raised here."""
    with _auth_args("src", src, registry) as src_args, \
            _auth_args("dest", dst, registry) as dst_args:
        argv = [skopeo_path(), "--override-os", PLATFORM[0], "--override-arch", PLATFORM[1],
                "copy", "--quiet", *src_args, *dst_args, *extra]
        if all_images:
            argv.append("--all")
        argv += [source, dest]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        except FileNotFoundError:
            raise RuntimeFailure("skopeo is not installed: run scripts/install.sh") from None
        try:
            stderr = _wait(proc, time.monotonic() + timeout, guard)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"copying {source} to {dest} took over {timeout:g}s") from None
    if proc.returncode != 0:
        raise classify(stderr, f"copying {source} to {dest}")


def _wait(proc: subprocess.Popen[str], deadline: float,
          guard: Callable[[], None] | None) -> str:
    """skopeo's stderr once it exited; it is killed (and reaped) if the deadline
    passes or ``guard`` raises."""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0)
            try:
                _out, err = proc.communicate(
                    timeout=min(left, GUARD_INTERVAL) if guard is not None else left)
                return err or ""
            except subprocess.TimeoutExpired:
                if guard is not None:
                    guard()
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def classify(stderr: str, action: str) -> BerthError:
    """skopeo's complaint as the narrowest berth error."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    message = lines[-1] if lines else "skopeo failed without a message"
    for prefix in ("time=", "level=fatal msg="):
        if message.startswith(prefix):
            found = re.search(r'msg="((?:[^"\\]|\\.)*)"', message)
            message = found.group(1).replace('\\"', '"') if found else message
    low = message.lower()
    full = f"{action}: {message}"
    if _DIGEST_ERROR.search(message):
        return DigestError(full)
    if ("manifest unknown" in low or "name unknown" in low or "not found" in low
            or "no such file" in low or "does not exist" in low):
        return NotFound(full)
    if "unauthorized" in low or "authentication required" in low or "denied" in low:
        return PermissionDenied(full)
    return RuntimeFailure(full)
