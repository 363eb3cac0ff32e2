"""Docker's events from berth's log: the past from ``since`` (with exits the engine
recorded), then live, in Docker's shape, with filters and ``until``."""

from __future__ import annotations

import threading
import time

from tests.dockerapi.conftest import Api


def test_events_since_until_filters_and_live(api: Api, busybox: str) -> None:
    client = api.client(version="1.41")
    client.images.pull(busybox)
    began = time.time() - 1
    ctr = client.containers.run(busybox, ["sh", "-c", "exit 2"], detach=True, name="dpy-ev")
    ctr.wait()
    ctr.remove()
    until = time.time() + 0.5
    past = list(client.events(since=began, until=until, decode=True,
                              filters={"type": "container"}))
    actions = [(e["Action"], e["Actor"]["Attributes"].get("name")) for e in past]
    assert actions == [("create", "dpy-ev"), ("start", "dpy-ev"), ("die", "dpy-ev"),
                       ("destroy", "dpy-ev")], actions
    die = next(e for e in past if e["Action"] == "die")
    assert die["Actor"]["Attributes"]["exitCode"] == "2" and die["id"] == ctr.id
    assert die["from"] == busybox and die["time"] >= int(began)
    assert all(e["Type"] == "container" for e in past)
    only_die = list(client.events(since=began, until=until, decode=True,
                                  filters={"event": "die"}))
    assert [e["Action"] for e in only_die] == ["die"]
    # live: a stream opened now sees a container created after it
    seen: list[dict[str, object]] = []

    def follow() -> None:
        for event in client.events(decode=True, until=time.time() + 15,
                                   filters={"container": "dpy-live"}):
            seen.append(event)
            if event["Action"] == "destroy":
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(1)
    live = client.containers.run(busybox, ["true"], detach=True, name="dpy-live")
    live.wait()
    live.remove()
    reader.join(20)
    assert [e["Action"] for e in seen] == ["create", "start", "die", "destroy"], seen


def test_bad_event_parameters_are_400(api: Api) -> None:
    client = api.client(version="1.41")
    for params in ({"since": "yesterday"}, {"filters": '{"label": ["x"]}'}):
        response = client.api.get(client.api._url("/events"), params=params)
        assert response.status_code == 400, params
        assert set(response.json()) == {"message"}
