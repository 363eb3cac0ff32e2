"""State at a past point, computed from the log alone (never from the read model).

The store keeps ``recorded_at`` non-decreasing along positions, so "up to time T" is a
prefix of the log just as "up to position P" is, and the two bounds compose.
"""

from __future__ import annotations

from datetime import datetime

from engine.containers.projection import ContainerState, fold
from engine.errors import InvalidArgument
from engine.store.reader import Reader


def state_at(reader: Reader, position: int | None = None, time: datetime | None = None,
             container: str | None = None) -> dict[str, ContainerState]:
    """Containers (removed ones included, as "removed") as they were at that point.

    With neither bound it is the state now, from the log: what the read model should
    say, which makes this also the reference for ``verify_read_model``.
    """
    if position is not None and position < 0:
        raise InvalidArgument("position must be >= 0")
    if time is not None and time.tzinfo is None:
        raise InvalidArgument("time must be timezone-aware (UTC)")
    if position == 0:
        return {}
    return fold(reader.iter_all(to_position=position, until=time, stream=container))
