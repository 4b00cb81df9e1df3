"""An outside engine appending to floe's table while floe ingests: no row lost on either side.

PyIceberg's SqlCatalog commits to the same SQLite catalog and table (its own compare-and-swap on
`metadata_location`) while floe's sink commits every second. Both sides' commits race; a lost
swap is retried on fresh metadata. At the end the table holds floe's acknowledged rows and
PyIceberg's appended rows, each exactly once.
"""

import threading
import time

import pyarrow as pa

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted
from floe_e2e.tables import ids_exactly_once, load_table, wait_for_rows

#: PyIceberg appends made during the run (bounded).
OUTSIDE_APPENDS = 8
#: floe requests made during the run (bounded).
FLOE_REQUESTS = 40


def _outside_batch(table, k: int) -> pa.Table:
    schema = table.schema().as_arrow()
    n = 5
    rows = {
        "ns": [f"outside.{k}"] * n,
        "type": ["py"] * n,
        "id": [f"py-{k:02d}-{i}" for i in range(n)],
        "ts": pa.array([1_740_816_000_000_000 + i for i in range(n)], type=pa.timestamp("us", tz="UTC")),
        "data": ['{"from":"pyiceberg"}'] * n,
        "visibility": [None] * n,
        "seq": [k * 100 + i for i in range(n)],
        "type_upper": ["PY"] * n,
    }
    return pa.Table.from_pydict(rows, schema=schema)


def race_with_floe(floe_server, load, appends: int, retry_on=Exception, tries: int = 10, pause: float = 0.3):
    """Appends `appends` batches through `load()` (a function returning the table) from a thread
    while floe ingests FLOE_REQUESTS requests; each lost swap (`retry_on`) is retried on fresh
    metadata, up to `tries` times. Returns (floe ids, outside ids, lost swaps), all acknowledged."""
    # The table exists once floe's first commit lands.
    first = make_events("floe", 10)
    assert_accepted(floe_server.post_events(first), 10)
    wait_for_rows(floe_server, 10)

    outside_ids: list[str] = []
    conflicts = [0]
    errors: list[BaseException] = []

    def outside_writer():
        try:
            for k in range(appends):
                for attempt in range(tries):
                    table = load()
                    batch = _outside_batch(table, k)
                    try:
                        table.append(batch)
                        break
                    except retry_on:
                        conflicts[0] += 1
                        if attempt == tries - 1:
                            raise
                        time.sleep(0.05)
                outside_ids.extend(batch.column("id").to_pylist())
                time.sleep(pause)
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
    assert len(outside_ids) == appends * 5
    return floe_ids, outside_ids, conflicts[0]


def test_pyiceberg_appends_while_floe_ingests(floe_server):
    # PyIceberg's SqlCatalog raises CommitFailedException (and friends) on a lost swap.
    floe_ids, outside_ids, _ = race_with_floe(floe_server, lambda: load_table(floe_server), OUTSIDE_APPENDS)
    table = wait_for_rows(floe_server, len(floe_ids) + len(outside_ids), settle=2.0)
    ids_exactly_once(table, floe_ids + outside_ids)
