"""``rm -f`` of a live container: its stop is recorded before the kill, so the exit
reads "stop" (asked for), and a worker dying in between leaves an intent that the
resend finishes."""

from __future__ import annotations

import subprocess

from engine import events as ev
from tests.e2e.conftest import Engine
from tests.helpers import wait_until


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _stream(engine: Engine, cid: str) -> list[ev.RecordedEvent]:
    with engine.store() as store:
        return store.read_stream(cid)


def test_a_forced_remove_records_a_stop_not_a_crash(up: Engine) -> None:
    """A regression: the kill of ``rm -f`` had no intent, so its exit was recorded as
    a crash (code 137), as if the process had died on its own."""
    cid = _ok(up.cli("run", "-d", "--network", "none", up.rootfs, "sleep", "60")).strip()
    _ok(up.cli("rm", "-f", cid))
    stream = _stream(up, cid)
    types = [r.type for r in stream]
    assert types[-3:] == [ev.CONTAINER_STOP_REQUESTED, ev.CONTAINER_EXITED,
                          ev.CONTAINER_REMOVED]
    exited = stream[-2].event
    assert isinstance(exited, ev.Exited)
    assert (exited.reason, exited.expected) == ("stop", True)


def test_a_forced_remove_cut_short_after_its_intent_is_finished_by_the_resend(
        engine: Engine) -> None:
    engine.start_worker_process()
    cid = _ok(engine.cli("run", "-d", "--network", "none", engine.rootfs, "sleep",
                         "60")).strip()
    done = engine.through_crash("container.remove.intended", "rm", "-f", cid)
    assert done.returncode == 0, done.stderr
    types = [r.type for r in _stream(engine, cid)]
    assert types.count(ev.CONTAINER_STOP_REQUESTED) == 1
    assert types.count(ev.CONTAINER_REMOVED) == 1
    assert types[-1] == ev.CONTAINER_REMOVED
    assert '"state": "removed"' in _ok(engine.cli("inspect", cid))
    assert _ok(engine.cli("ps", "-aq")) == ""


def test_a_forced_remove_after_an_unrecorded_exit_records_that_exit_as_it_was(
        up: Engine) -> None:
    """An exit conmon has written but the worker has not recorded yet (its monitors
    lag behind, as under load in ``run --rm``) is recorded before ``rm -f`` decides:
    the container ended on its own, so no stop is recorded and the exit keeps its
    own reason (it read "stop" when the remove's intent came first)."""
    worker = up.worker
    assert worker is not None and worker.monitor is not None and worker.conmons is not None
    worker.monitor.close()  # nothing records exits behind the test's back now
    worker.monitor = None
    worker.service.observers.remove(worker.conmons.observe)
    worker.conmons.close()
    worker.conmons = None
    cid = _ok(up.cli("run", "-d", "--network", "none", up.rootfs, "sh", "-c",
                     "exit 3")).strip()
    wait_until(lambda: worker.runtime.exit_status(cid) is not None, 15,
               what="conmon's exit file")
    assert _stream(up, cid)[-1].type == ev.CONTAINER_STARTED  # not recorded yet
    _ok(up.cli("rm", "-f", cid))
    stream = _stream(up, cid)
    assert [r.type for r in stream][-2:] == [ev.CONTAINER_EXITED, ev.CONTAINER_REMOVED]
    exited = stream[-2].event
    assert isinstance(exited, ev.Exited)
    assert (exited.exit_code, exited.reason, exited.expected) == (3, "crash", False)
