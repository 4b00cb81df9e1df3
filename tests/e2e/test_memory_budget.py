"""The sink's memory budget (`rolling.memory_mb`, docs/config.md): a high-cardinality
`partition_by` does not run floe out of memory.

One request of 10,000 events with 10,000 distinct values of the identity partition column `ns`
makes one micro-batch that fans out to 10,000 partitions. With `memory_mb = 16` the sink keeps
at most about 16 MB of open data files and closes the largest first, so floe's peak resident
memory (VmHWM in /proc/<pid>/status) stays within its resident memory before the request plus
the budget plus a margin. Every row lands exactly once, one data file per partition, all in one
commit.
"""

import pathlib

from floe_e2e.config import SINK, STREAM
from floe_e2e.engines import duckdb_scan
from floe_e2e.events import make_events
from floe_e2e.metrics import metric_value, metrics_samples
from floe_e2e.server import wait_until
from floe_e2e.tables import ids_exactly_once, load_table

#: Distinct partition values in the one request.
PARTITIONS = 10_000
#: `rolling.memory_mb` of the sink.
BUDGET_MB = 16
#: Three columns, not the standard pipeline's eight: each of the 10,000 data files costs less to
#: write (the test stays well under a minute on a debug build), and the budget matters as much.
PIPELINE_SQL = f"INSERT INTO {SINK} SELECT ns, id, seq FROM {STREAM}"
#: Allowed above the resident memory before the request plus the budget: the request itself
#: (the JSON body, its Arrow batch, the log record, the pipeline's micro-batch and its split into
#: 10,000 batches), the 10,000 DataFiles with their column statistics and the manifest of the
#: commit, and allocator slack. Measured on a debug build (2 cores): with the budget the peak grew
#: 83 MiB over the baseline; with every writer open until the commit (iceberg's FanoutWriter, as
#: before issue 12) it grew 791 MiB (about 80 KiB per open 3-column writer), so the bound of
#: 16 + 128 MiB fails that by far and leaves the budgeted path room.
MARGIN_MB = 128


def status_kib(pid: int, key: str) -> int:
    """A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in KiB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def committed_records(server) -> int:
    snapshot = load_table(server).current_snapshot()
    return 0 if snapshot is None else int(snapshot.summary["total-records"])


def test_ten_thousand_partitions_stay_within_the_budget(floe_server_factory, duckdb_con):
    server = floe_server_factory(partition_by=("ns",), pipeline_sql=PIPELINE_SQL, rolling={"memory_mb": BUDGET_MB})
    pid = server.proc.pid
    namespaces = [f"tenant-{i:05d}.example" for i in range(PARTITIONS)]
    events = make_events("mem", PARTITIONS, namespaces=namespaces)

    # The table exists once the sink opened: warm up the whole path (HTTP, log, pipeline, sink,
    # catalog) with one row so the baseline includes what every commit needs anyway.
    warm = make_events("warm", 1, namespaces=["warm.up"])
    assert server.post_events(warm).status == 200
    wait_until(lambda: committed_records(server) == 1, timeout=30, what="the warm-up row committed")
    baseline_kib = status_kib(pid, "VmRSS")

    resp = server.post_events(events)
    assert resp.status == 200, resp.body
    assert resp.json()["accepted"] == PARTITIONS
    wait_until(lambda: committed_records(server) == PARTITIONS + 1, timeout=45,
               what=f"{PARTITIONS} rows committed")
    peak_kib = status_kib(pid, "VmHWM")
    grew_mb = (peak_kib - baseline_kib) / 1024
    print(f"VmRSS before {baseline_kib / 1024:.1f} MiB, VmHWM after {peak_kib / 1024:.1f} MiB "
          f"(+{grew_mb:.1f} MiB; budget {BUDGET_MB} MiB)")
    assert grew_mb <= BUDGET_MB + MARGIN_MB, (
        f"peak RSS grew {grew_mb:.1f} MiB over {baseline_kib / 1024:.1f} MiB for {PARTITIONS} partitions; "
        f"rolling.memory_mb = {BUDGET_MB}, margin {MARGIN_MB} MiB"
    )

    # All in one commit (the warm-up's, then this one), one file per partition.
    table = load_table(server)
    assert len(table.snapshots()) == 2
    files = list(table.scan().plan_files())
    assert len(files) == PARTITIONS + 1
    assert all(task.file.record_count == 1 for task in files)
    assert sorted(task.file.partition[0] for task in files) == sorted([*namespaces, "warm.up"])

    # The files closed early for the budget are counted (they are in the commit too).
    closed = metric_value(metrics_samples(server), "floe_sink_files_closed_for_memory_total", sink="events_table")
    assert closed is not None and PARTITIONS // 2 < closed <= PARTITIONS, closed

    # Every row exactly once, read by DuckDB through the table's metadata.
    got = duckdb_scan(duckdb_con, server, "")
    ids_exactly_once(got, [e["id"] for e in [*warm, *events]])
    pairs = dict(zip(got.column("id").to_pylist(), got.column("ns").to_pylist()))
    assert all(pairs[e["id"]] == e["ns"] for e in events)
