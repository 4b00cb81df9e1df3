"""An outside engine writing to floe's table while floe ingests (PyIceberg, via SqlCatalog or REST).

`race_with_floe` appends batches from a thread through any catalog's `load_table` while floe
ingests, retrying lost compare-and-swaps; used by test_outside_writer.py (SQLite file) and
test_rest_concurrency.py (REST catalog).
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa

from .events import make_events
from .http import assert_accepted
from .tables import wait_for_rows

#: floe requests made during the run (bounded).
FLOE_REQUESTS = 40


def outside_batch(table, k: int) -> pa.Table:
    """Five rows for `table` (analytics.events) as an outside engine writes them: ids
    `py-{k:02d}-{i}`, namespace `outside.{k}`."""
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
                    batch = outside_batch(table, k)
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
