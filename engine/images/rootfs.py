"""Build a busybox root filesystem from the host's static busybox.

Tests and the demo need a real rootfs without downloading an image; a static
busybox plus one symlink per applet is a complete userland for that.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from engine.errors import InvalidArgument, RuntimeFailure

DEFAULT_BUSYBOX = "/bin/busybox"
_DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run")


def build_busybox_rootfs(dest: str, busybox: str = DEFAULT_BUSYBOX) -> str:
    """Create (or complete) a busybox rootfs at ``dest`` and return its absolute path."""
    dest = os.path.abspath(dest)
    if not os.path.isfile(busybox):
        raise InvalidArgument(
            f"static busybox not found at {busybox}: install the busybox-static package"
        )
    for d in _DIRS:
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    target = os.path.join(dest, "bin", "busybox")
    if not os.path.exists(target):
        shutil.copy2(busybox, target)
    try:
        applets = subprocess.run(
            [target, "--list"], check=True, capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeFailure(f"cannot list busybox applets: {exc}") from None
    for applet in applets:
        link = os.path.join(dest, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    etc = os.path.join(dest, "etc")
    for name, text in (
        ("passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        ("group", "root:x:0:\nnobody:x:65534:\n"),
        # Mount points of the files berth binds over them (networks): present, so
        # that runc never has to create them in the rootfs.
        ("hosts", ""), ("resolv.conf", ""), ("hostname", ""),
    ):
        path = os.path.join(etc, name)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(text)
    return dest
