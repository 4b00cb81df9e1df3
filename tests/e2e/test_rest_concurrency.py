"""An outside engine appends through floe's REST catalog while floe ingests: no row lost.

PyIceberg's `RestCatalog` appends to `analytics.events` over `/iceberg` while floe's sink commits
every second. Both go through the same compare-and-swap on `metadata_location` in floe's catalog;
the REST client's lost swaps come back as `CommitFailedException` (409) and are retried on fresh
metadata, floe's sink retries its own. At the end the table holds every id that either side had
acknowledged, each exactly once, and floe's sink position equals the rows floe accepted.
"""

import threading
import time

from conftest import assert_accepted, ids_exactly_once, make_events, wait_for_rows
from test_outside_writer import _outside_batch
from test_rest_catalog import rest_catalog

#: REST appends made during the run (bounded).
OUTSIDE_APPENDS = 10
#: floe requests made during the run (bounded).
FLOE_REQUESTS = 40


def test_rest_client_appends_while_floe_ingests(floe_server):
    from pyiceberg.exceptions import CommitFailedException

    first = make_events("floe", 10)
    assert_accepted(floe_server.post_events(first), 10)
    wait_for_rows(floe_server, 10)

    outside_ids: list[str] = []
    conflicts = [0]
    errors: list[BaseException] = []

    def outside_writer():
        try:
            cat = rest_catalog(floe_server)
            for k in range(OUTSIDE_APPENDS):
                for attempt in range(20):
                    table = cat.load_table("analytics.events")
                    batch = _outside_batch(table, k)
                    try:
                        table.append(batch)
                        break
                    except CommitFailedException:
                        conflicts[0] += 1
                        if attempt == 19:
                            raise
                        time.sleep(0.05)
                outside_ids.extend(batch.column("id").to_pylist())
                time.sleep(0.2)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=outside_writer)
    t.start()
    floe_ids = [e["id"] for e in first]
    for r in range(FLOE_REQUESTS):
        events = make_events(f"floe{r:02d}", 20)
        assert_accepted(floe_server.post_events(events), 20)
        floe_ids += [e["id"] for e in events]
        time.sleep(0.05)
    t.join(timeout=120)
    assert not t.is_alive(), "the outside writer did not finish"
    assert not errors, f"the outside writer failed: {errors[0]!r}"
    assert len(outside_ids) == OUTSIDE_APPENDS * 5

    table = wait_for_rows(floe_server, len(floe_ids) + len(outside_ids), settle=2.0)
    ids_exactly_once(table, floe_ids + outside_ids)
    print(f"REST appends: {OUTSIDE_APPENDS}, lost swaps retried: {conflicts[0]}")
