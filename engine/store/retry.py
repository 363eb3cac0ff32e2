"""The store's one retry policy: ride out a database server that went away.

PostgreSQL may restart (a failover, ``pg_ctl restart``, a network blip) while
commands flow. Calls into the store then fail with connection-level errors, which
``engine.store.db`` translates to :class:`~engine.errors.StoreUnreachable`. Those,
and only those, are retried here with a capped exponential backoff (tenacity):
the worker's reply is slow, never wrong.

Why a retry can never double an append: the recorder checks the command id inside
the writing transaction, under the writer lock. If a commit happened but its
acknowledgement was lost with the connection, the retry finds the id in the
``commands`` table and returns what was recorded then, writing nothing.

Never retried: ConcurrencyError and AlreadyExists (a decision must be re-taken by
the handler, not replayed), InvalidArgument, and every other StoreError (a full
or read-only SQLite file will not heal by waiting; the caller gets a clear error
at once).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from engine.errors import StoreUnreachable

log = logging.getLogger("berth.store.retry")

P = ParamSpec("P")
R = TypeVar("R")

# SQLSTATE classes/codes that mean "the connection, not the statement, failed":
# 08 connection exception; 57P01 admin shutdown, 57P02 crash shutdown, 57P03
# cannot connect now (the server is starting or in recovery).
_CONNECTION_SQLSTATE_PREFIXES = ("08",)
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_connection_sqlstate(sqlstate: str | None) -> bool:
    """True for a server-reported SQLSTATE that names a lost or refused connection;
    None (psycopg's value for client-side failures such as "connection refused")
    counts too."""
    if sqlstate is None:
        return True
    return sqlstate.startswith(_CONNECTION_SQLSTATE_PREFIXES) or sqlstate in _CONNECTION_SQLSTATES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how often to retry a store call whose connection failed.

    ``deadline`` bounds the total time spent on one call: past it the caller gets
    the StoreUnreachable error (and the worker's reply says the store is down).
    """

    deadline: float = 60.0
    initial: float = 0.05
    cap: float = 1.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """``BERTH_STORE_RETRY_SECONDS`` overrides the deadline (0 disables retries)."""
        raw = os.environ.get("BERTH_STORE_RETRY_SECONDS")
        if not raw:
            return cls()
        try:
            deadline = float(raw)
        except ValueError:
            return cls()
        return cls(deadline=max(deadline, 0.0))


NO_RETRY = RetryPolicy(deadline=0.0)


RETRIES = [0]
"""Store calls retried since the process started (one cell, so readers see the
current count; read by the metrics)."""


def _log_retry(state: RetryCallState) -> None:
    RETRIES[0] += 1
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    log.warning("store unreachable (attempt %d, %.1fs so far), retrying: %s",
                state.attempt_number, state.seconds_since_start, error)


def call(policy: RetryPolicy, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn``, retrying it on StoreUnreachable as ``policy`` allows."""
    if policy.deadline <= 0:
        return fn(*args, **kwargs)
    retrying = Retrying(
        retry=retry_if_exception_type(StoreUnreachable),
        wait=wait_exponential_jitter(multiplier=policy.initial, max=policy.cap,
                                     jitter=policy.initial),
        stop=stop_after_delay(policy.deadline),
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)


class HasRetryPolicy(Protocol):
    retry_policy: RetryPolicy


S = TypeVar("S", bound=HasRetryPolicy)


def retried(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Decorate an ``EventStore`` method so it follows the store's retry policy.

    Only outermost public methods are decorated: a decorated method calling another
    would multiply the waits.
    """

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return call(self.retry_policy, method, self, *args, **kwargs)

    return wrapper
