"""The filtered event query pages by position: each page reads only what follows it.

``berth events --filter ...`` fetched every matching row for every 500-event page
and dropped the ones before the page (quadratic on a big log); the store now takes
the position to start after and the page size into the SQL itself.
"""

from __future__ import annotations

from engine import events as ev
from engine.store.store import EventStore
from tests.store.helpers import create, new_id, run


def test_filtered_pages_follow_each_other_without_gaps_or_repeats(store: EventStore) -> None:
    mine, other = new_id(), new_id()
    create(store, "mine", mine)
    create(store, "other", other)
    version = {mine: 1, other: 1}
    for _ in range(7):
        for cid in (mine, other):
            run(store, cid, version[cid], ev.Signalled(10))
            version[cid] += 1
    everything = store.query(mine)
    assert len(everything) == 1 + 7
    pages, after = [], 0
    while page := store.query(mine, limit=4, after=after):
        assert len(page) <= 4 and page[0].position > after
        pages.append([r.position for r in page])
        after = page[-1].position
    assert [p for page in pages for p in page] == [r.position for r in everything]
    assert len(pages) == 2
    only = store.query(mine, [ev.CONTAINER_SIGNALLED], limit=2, after=everything[3].position)
    assert [r.position for r in only] == [r.position for r in everything[4:6]]
