"""systemd's readiness protocol (``sd_notify``), without a library.

Under a unit of ``Type=notify`` systemd passes ``NOTIFY_SOCKET``: a datagram unix
socket (a leading ``@`` means the abstract namespace) to which the service writes
``READY=1`` once it serves, and ``STOPPING=1`` when it begins to stop. Anywhere else
the variable is unset and this does nothing, so berth needs nothing from PID 1.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Tell the service manager ``state`` (e.g. ``READY=1``); False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@" or "\0" in address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), target)
        except OSError:
            return False  # the manager went away; readiness is advisory
    return True
