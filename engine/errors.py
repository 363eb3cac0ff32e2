"""One error hierarchy for all of berth.

Every error carries a stable ``code`` string: the CLI maps it to an exit code and
the bus puts it in error replies, so clients can branch on the code and never on
the wording of a message.
"""

from __future__ import annotations


class BerthError(Exception):
    """Base of every error berth raises on purpose."""

    code = "internal"
    exit_code = 125

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(BerthError):
    """Bad input refused at an edge (ids, names, paths, signals, sizes, frames)."""

    code = "invalid_argument"
    exit_code = 125


class NotFound(BerthError):
    """The container (or session, or stream) does not exist."""

    code = "not_found"
    exit_code = 125


class WrongNode(NotFound):
    """The container lives on another node; ``node`` names it, so the publisher can
    send the command there (a redirect, not a failure: nothing was done or recorded)."""

    code = "wrong_node"

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.node = node


class AlreadyExists(BerthError):
    """A container id or name is already taken."""

    code = "already_exists"
    exit_code = 125


class InvalidState(BerthError):
    """The container is in a state that does not allow the operation."""

    code = "invalid_state"
    exit_code = 125


class Refused(InvalidState):
    """The rules refused the command before anything ran (``engine.containers.decide``).

    Its own class so the service can tell a refusal, which changed nothing, from a
    failure part-way through a command; on the wire it is ``invalid_state`` like any
    state error.
    """


class PermissionDenied(BerthError):
    """The runtime or the filesystem refused the operation."""

    code = "permission_denied"
    exit_code = 126


class RuntimeFailure(BerthError):
    """conmon, runc or CRIU failed in a way not covered by a narrower error."""

    code = "runtime_failure"
    exit_code = 125


class CommandNotFound(RuntimeFailure):
    """The container's command does not exist: podman's (and a shell's) exit 127."""

    code = "command_not_found"
    exit_code = 127


class CommandNotInvokable(RuntimeFailure):
    """The container's command exists but cannot be run (not executable, a directory):
    podman's (and a shell's) exit 126."""

    code = "command_not_invokable"
    exit_code = 126


class Timeout(BerthError):
    """A bounded wait ran out (conmon sync pipe, stop, exit file, reply)."""

    code = "timeout"
    exit_code = 125


class ConcurrencyError(BerthError):
    """An append found a stream version other than the one it expected."""

    code = "concurrency_conflict"
    exit_code = 125


class StoreError(BerthError):
    """The event store could not be reached or refused a write."""

    code = "store_unavailable"
    exit_code = 125


class StoreUnreachable(StoreError):
    """The store's server could not be reached or dropped the connection.

    Kept apart from other store errors because it is the only one worth retrying:
    the server may come back, and an append whose commit outcome was lost is safe to
    repeat (appends are idempotent on the command id). It shares StoreError's wire
    code, so clients see one "store unavailable" whatever the cause.
    """


class StateUnwritable(BerthError):
    """The state directory (bundles, logs, SQLite file) is full or read-only."""

    code = "state_unwritable"
    exit_code = 125


class Unavailable(BerthError):
    """The engine (broker or the worker of a node) is not reachable."""

    code = "unavailable"
    exit_code = 125


class HandedBack(Unavailable):
    """A stopping worker did not run the command (or cancelled a blocked read, a
    ``wait`` or a log follow, which has no result yet) and gives it back to the
    broker, which holds it for another worker of the node (a publisher sees this
    only from a broker that predates it)."""

    code = "handed_back"


class Passive(Unavailable):
    """The passive broker of a Binary Star pair turned the command away unrun: the
    publisher sends it to the other broker."""

    code = "passive"


class RateLimited(BerthError):
    """The broker refused a command because its sender exceeded its rate limit."""

    code = "rate_limited"
    exit_code = 125


class ProtocolError(InvalidArgument):
    """A frame on the bus could not be decoded or failed validation."""

    code = "protocol_error"


ERRORS_BY_CODE: dict[str, type[BerthError]] = {
    cls.code: cls
    for cls in (
        BerthError,
        InvalidArgument,
        NotFound,
        WrongNode,
        AlreadyExists,
        InvalidState,
        PermissionDenied,
        RuntimeFailure,
        CommandNotFound,
        CommandNotInvokable,
        Timeout,
        ConcurrencyError,
        StoreError,
        StateUnwritable,
        Unavailable,
        HandedBack,
        Passive,
        RateLimited,
        ProtocolError,
    )
}


def error_from_code(code: str, message: str) -> BerthError:
    """Rebuild a typed error from a wire reply's code and message."""
    if code == WrongNode.code:
        return NotFound(message)  # the redirect was not followed: to the caller, not here
    return ERRORS_BY_CODE.get(code, BerthError)(message)
