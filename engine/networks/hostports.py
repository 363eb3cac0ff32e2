"""Host port reservation (libpod's ``bindPorts``).

The sockets are bound here and handed to conmon, which keeps them open for the
container's lifetime so no other process can take the ports meanwhile.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from engine.containers.spec import PortMapping
from engine.errors import InvalidArgument, RuntimeFailure


def bind_ports(ports: Sequence[PortMapping]) -> list[socket.socket]:
    """Bind every requested port or none: on any failure the bound ones are closed."""
    bound: list[socket.socket] = []
    try:
        for p in ports:
            if p.protocol == "tcp":
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            elif p.protocol == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            else:
                raise InvalidArgument(f"unknown protocol {p.protocol}")
            bound.append(s)
            try:
                s.bind((p.host_ip or "0.0.0.0", p.host_port))
                if p.protocol == "tcp":
                    s.listen(1)
            except OSError as exc:
                raise RuntimeFailure(
                    f"cannot listen on the {p.protocol.upper()} port "
                    f"{p.host_ip or '0.0.0.0'}:{p.host_port}: {exc.strerror}"
                ) from None
    except BaseException:
        for s in bound:
            s.close()
        raise
    return bound
