"""``container.run``: ``berth run --rm`` in one round trip on the bus.

The CLI used to send a create, a start, a wait and a remove, one round trip each
through the broker. Here the worker carries out the same four steps for one command,
and each step is still the ordinary command it was: it goes through
``ContainerService.handle`` with a causation whose id is derived from the run's id
(``engine.commands.run_step_id``) and whose correlation id is the run's. That keeps
every guarantee the steps had on their own:

* intent before acting and its recorded events, exactly as a separate create, start
  and remove record them (``container.run`` adds no event of its own);
* a resend of the same run id after a lost reply or a worker killed -9 replays the
  steps already recorded (the create gives back the container it made) and carries
  on with the rest: no container is created twice, none is started twice (a start
  whose worker died after runc start but before recording it is seen in the
  container's state, ``_started_before``: its ``started`` event is then missing from
  the log, as for a plain ``container.start`` cut short there, but its exit is not);
* a step that fails records its failure under its own id; the run then removes what
  it created (the client asked for ``--rm``) and answers with the step's error.

Its stdio goes to the stream session the client opened with the same session id
(kind ``run``, ``workers.attach``): attached after the create and before the start,
and done (every byte of output sent) before the remove, which would otherwise race
the client for the last of its output.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bus.protocol import Command, Reply
from engine import command_types as t
from engine import commands as c
from engine.containers.projection import CREATED
from engine.errors import BerthError, NotFound
from engine.faults import crash_point

if TYPE_CHECKING:
    from engine.containers.queries import Queries
    from engine.containers.service import ContainerService, Outcome
    from workers.attach import Meeting

log = logging.getLogger("berth.run")

MEET_WAIT = 10.0
"""How long a run waits for its stream session to open and attach (the client opens
it before sending the command; the two take different sockets)."""


class RunFailed(Exception):
    """A step answered with an error: its reply is the run's."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.message)
        self.reply = reply


def step_causation(cmd: Command, step: str, command_type: str) -> c.Causation:
    """The causation of one step: its own id (derived, so a resend finds it), the run's
    correlation and actor, and the type of the command the step is."""
    return c.Causation(c.run_step_id(cmd.id, step), cmd.correlation_id, cmd.actor,
                       command_type)


class Runs:
    """Carries out ``container.run`` commands on this worker's node."""

    def __init__(self, service: ContainerService, queries: Queries,
                 streams: Any = None) -> None:
        self.service = service
        self.queries = queries
        self.streams = streams
        """The worker's stream server (``workers.attach.StreamServer``), if it has one."""

    def run(self, run: c.Run, cmd: Command) -> Reply:
        positions: list[int] = []

        def step(name: str, command_type: str, command: c.ContainerCommand) -> Outcome:
            outcome = self.service.handle(command, step_causation(cmd, name, command_type))
            positions.extend(outcome.positions)
            if outcome.error is not None:
                err = outcome.error
                raise RunFailed(Reply(cmd.id, False, err.code, err.message, tuple(positions)))
            return outcome

        try:
            created = step("create", t.CREATE, run.create)
        except RunFailed as failed:
            return failed.reply
        cid = str(created.result["id"])
        crash_point("container.run.created")
        # A replayed create (a resend) finds its session at once or never: it was on
        # the worker that died, or it has the container already.
        meeting = self._meet(run.session_id, cid,
                             0.0 if created.result.get("replayed") else MEET_WAIT)
        try:
            if not (created.result.get("replayed") and self._started_before(cid)):
                step("start", t.START, c.Start(cid))
        except RunFailed as failed:  # it never ran: --rm still wants it gone
            self._remove(cid, cmd, positions)
            return failed.reply
        except BerthError:  # refused before its intent: the same
            self._remove(cid, cmd, positions)
            raise
        if meeting is not None:
            self._drained(meeting)
        # An engine closing cuts this wait short (HandedBack): the container is left
        # as it is, and the next worker carries the same command on from the steps
        # recorded.
        _, code = self.queries.wait(c.Wait(cid))
        crash_point("container.run.exited")
        failed_remove = self._remove(cid, cmd, positions)
        if failed_remove is not None:
            return failed_remove
        return Reply(cmd.id, True, positions=tuple(positions),
                     result={"id": cid, "node": self.service.node, "exit_code": code})

    def _drained(self, meeting: Meeting) -> None:
        """Until the session has sent the exit frame (all the output: removing the
        container sooner would race the client for the last of it), or has ended
        otherwise (the client detached or left), or the worker stops. The session
        saw conmon's exit file: recording it now spares the wait for the exit
        monitor's turn (the same system id: recorded once whoever comes first)."""
        while not meeting.done.wait(1.0):
            if self.service.closing.is_set():
                return
        self.service.record_exit(meeting.container)

    def _started_before(self, cid: str) -> bool:
        """Whether the first attempt of this run already started ``cid``: a start
        records no intent, so a worker killed between runc start and recording it
        leaves a container that is no longer ``created`` (running, or exited and
        recorded by the next worker's reconciliation). Starting it again would run
        the user's program twice (a start of an exited container is a restart)."""
        return self.service.latest(cid).state != CREATED

    def _meet(self, session_id: str | None, cid: str, wait: float) -> Meeting | None:
        """The run's stream session, attached to ``cid``; None without one (no stream
        server, no session asked, or the client gone before it opened it: the run
        goes on, its output is in the log)."""
        if session_id is None or self.streams is None:
            return None
        meeting: Meeting | None = self.streams.runs.meet(session_id, cid, wait)
        if meeting is None:
            log.warning("run session %s never opened: running %s without it", session_id,
                        cid[:12])
            return None
        if not meeting.attached.wait(MEET_WAIT) and not meeting.done.is_set():
            log.warning("run session %s did not attach to %s in time: starting it without",
                        session_id, cid[:12])
        return meeting

    def _remove(self, cid: str, cmd: Command, positions: list[int]) -> Reply | None:
        """The remove step (forced: ``--rm`` of a container that may still run after a
        failed step); its error reply if it failed, None if it is gone."""
        outcome = self.service.handle(c.Remove(cid, force=True),
                                      step_causation(cmd, "remove", t.REMOVE))
        positions.extend(outcome.positions)
        err = outcome.error
        if err is None or isinstance(err, NotFound):
            return None
        return Reply(cmd.id, False, err.code, f"{err.message} (container {cid[:12]} exited "
                     "but was not removed)", tuple(positions))
