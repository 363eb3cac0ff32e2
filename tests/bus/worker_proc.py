"""A worker process for kill -9 tests: a WorkerLink whose handler never answers.

Prints ``ready`` once connected and ``got <command id>`` for each command it takes,
then blocks in the handler until it is killed.
"""

from __future__ import annotations

import sys
import threading

from bus.protocol import Command, Reply
from bus.worker_link import WorkerLink


def main() -> None:
    endpoint, node, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    forever = threading.Event()

    def handler(command: Command) -> Reply:
        print(f"got {command.id}", flush=True)
        forever.wait()
        return Reply(command.id, True)

    link = WorkerLink(endpoint, node, handler, heartbeat_interval=interval)
    link.start()
    link.connected.wait(10)
    print("ready", flush=True)
    forever.wait()


if __name__ == "__main__":
    main()
