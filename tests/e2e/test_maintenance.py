"""Table maintenance through `floe table compact|expire-snapshots|remove-orphans`, on a table
floe did not write (created and appended 200 times by PyIceberg through floe's REST catalog)
and on floe's own table while floe ingests into it.

Checked with independent readers: PyIceberg (`inspect.files`, time travel) and DuckDB
(`iceberg_scan`) read the same row multiset before and after; expiry deletes exactly the files
no retained snapshot references; orphan cleanup deletes an old stray file and keeps a fresh one.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time

import pyarrow as pa
import pytest

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, try_post_events
from floe_e2e.metrics import healthz, metric_value, metrics_samples
from floe_e2e.server import floe_bin_path, run_floe
from floe_e2e.tables import local_path, rest_catalog, sql_catalog, wait_for_ids, wait_for_rows

#: Small appends made by PyIceberg (the issue's "200 small commits").
APPENDS = 200
#: Rows per append; ids are k * ROWS + i.
ROWS = 5
#: Buckets (identity partitions) the rows spread over.
BUCKETS = 4
TABLE = "maint.small"


def schema() -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("bucket", pa.int32(), nullable=False),
        pa.field("name", pa.string()),
    ])


def batch(k: int) -> pa.Table:
    ids = [k * ROWS + i for i in range(ROWS)]
    return pa.Table.from_pydict(
        {"id": ids, "bucket": [i % BUCKETS for i in ids], "name": [f"row-{i}" for i in ids]}, schema=schema())


def row_hash(table: pa.Table) -> str:
    """A hash of the row multiset (order-independent)."""
    rows = sorted(json.dumps(r, sort_keys=True) for r in table.to_pylist())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def floe_table(server, *args: str) -> dict:
    """`floe table ARGS --config … --json`, asserted to succeed; its JSON report."""
    result = run_floe("table", *args, "--config", server.config_path, "--json", cwd=server.workdir)
    assert result.returncode == 0, f"floe table {args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def data_files_on_disk(table) -> set[str]:
    root = local_path(table.metadata.location) / "data"
    return {str(p) for p in root.rglob("*") if p.is_file()}


def live_data_files(table) -> set[str]:
    return {str(local_path(p)) for p in table.inspect.files().column("file_path").to_pylist()}


def duckdb_rows(con, table) -> pa.Table:
    loc = table.metadata_location.replace("'", "''")
    return con.execute(f"SELECT id, bucket, name FROM iceberg_scan('{loc}')").to_arrow_table()


@pytest.fixture(scope="module")
def small_table(module_floe_server_factory):
    """A running floe and TABLE: 200 PyIceberg appends through floe's REST catalog, partitioned
    by identity(bucket)."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    server = module_floe_server_factory()
    cat = rest_catalog(server)
    cat.create_namespace("maint")
    iceberg_schema = cat.create_table("maint.probe", schema=schema()).schema()
    cat.drop_table("maint.probe")
    bucket_id = iceberg_schema.find_field("bucket").field_id
    spec = PartitionSpec(PartitionField(source_id=bucket_id, field_id=1000, transform=IdentityTransform(),
                                        name="bucket"))
    table = cat.create_table(TABLE, schema=iceberg_schema, partition_spec=spec)
    for k in range(APPENDS):
        table.append(batch(k))
    return server


def test_compaction_of_200_small_appends(small_table, duckdb_con):
    server = small_table
    cat = rest_catalog(server)
    table = cat.load_table(TABLE)
    before = table.scan().to_arrow()
    assert before.num_rows == APPENDS * ROWS
    files_before = len(table.inspect.files())
    assert files_before == APPENDS * BUCKETS, "each append writes one file per bucket"
    snapshots_before = len(table.metadata.snapshots)
    old_snapshot = table.metadata.current_snapshot_id

    dry = floe_table(server, "compact", TABLE, "--dry-run")
    assert dry["files_before"] == files_before
    assert dry["files_rewritten"] == files_before, dry
    assert dry["files_after"] == BUCKETS, dry
    assert dry["commits"] == 0
    assert cat.load_table(TABLE).metadata.current_snapshot_id == old_snapshot, "a dry run changes nothing"

    report = floe_table(server, "compact", TABLE)
    assert report["files_rewritten"] == files_before, report
    assert report["files_written"] == BUCKETS, report
    assert report["files_after"] == BUCKETS and report["commits"] == 1 and report["abandoned"] == 0, report

    table = cat.load_table(TABLE)
    assert len(table.inspect.files()) == BUCKETS, "one file per partition"
    snapshot = table.metadata.current_snapshot()
    assert snapshot.summary.operation.value == "replace"
    assert snapshot.summary["floe.maintenance"] == "compact"
    assert len(table.metadata.snapshots) == snapshots_before + 1
    after = table.scan().to_arrow()
    assert row_hash(after) == row_hash(before), "the row multiset is unchanged"
    assert row_hash(duckdb_rows(duckdb_con, table)) == row_hash(before), "DuckDB reads the same rows"
    # Each new file holds one partition's rows.
    for part in table.inspect.partitions().to_pylist():
        assert part["file_count"] == 1 and part["record_count"] == APPENDS * ROWS // BUCKETS, part
    # Time travel to the snapshot before the compaction reads the old files.
    old = table.scan(snapshot_id=old_snapshot).to_arrow()
    assert row_hash(old) == row_hash(before)

    # Nothing left to do: a second run commits nothing.
    again = floe_table(server, "compact", TABLE)
    assert again["commits"] == 0 and again["files_rewritten"] == 0, again


def test_expiry_then_orphan_cleanup_delete_exactly_the_unreferenced_files(small_table, duckdb_con):
    server = small_table
    cat = rest_catalog(server)
    table = cat.load_table(TABLE)
    if table.metadata.current_snapshot().summary.operation.value != "replace":
        floe_table(server, "compact", TABLE)
        table = cat.load_table(TABLE)
    expected = row_hash(table.scan().to_arrow())
    on_disk = data_files_on_disk(table)
    live = live_data_files(table)
    assert live < on_disk, "the compacted-away files are still on disk (older snapshots read them)"

    dry = floe_table(server, "expire-snapshots", TABLE, "--older-than", "0", "--retain-last", "1", "--dry-run")
    assert dry["snapshots_after"] == 1 and dry["files_deleted"] > 0, dry
    assert data_files_on_disk(table) == on_disk, "a dry run deletes nothing"

    report = floe_table(server, "expire-snapshots", TABLE, "--older-than", "0", "--retain-last", "1")
    assert report["snapshots_before"] == len(table.metadata.snapshots) and report["snapshots_after"] == 1, report
    assert report["delete_failures"] == 0
    table = cat.load_table(TABLE)
    assert len(table.metadata.snapshots) == 1
    # Exactly the unreferenced data files are gone; every referenced one is there.
    assert data_files_on_disk(table) == live, "data files left = the live ones"
    manifests = {str(local_path(m.manifest_path)) for m in table.current_snapshot().manifests(table.io)}
    metadata_dir = local_path(table.metadata.location) / "metadata"
    avro = {str(p) for p in metadata_dir.glob("*.avro")}
    assert manifests | {str(local_path(table.current_snapshot().manifest_list))} == avro, \
        "manifests and manifest lists left = the current snapshot's"
    assert row_hash(table.scan().to_arrow()) == expected
    assert row_hash(duckdb_rows(duckdb_con, table)) == expected

    # Orphans: an old stray file in data/ is deleted, a fresh one is kept (it may belong to a
    # commit in flight), a stray outside the table is never touched.
    data_dir = local_path(table.metadata.location) / "data"
    old_stray = data_dir / "bucket=0" / "stray-old.parquet"
    fresh_stray = data_dir / "stray-fresh.parquet"
    outside = local_path(table.metadata.location).parent / "not-a-table.bin"
    for p in (old_stray, fresh_stray, outside):
        p.write_bytes(b"not referenced")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_stray, (two_days_ago, two_days_ago))
    os.utime(outside, (two_days_ago, two_days_ago))

    dry = floe_table(server, "remove-orphans", TABLE, "--dry-run")
    assert dry["deleted"] == [f"file://{old_stray}"] or dry["deleted"] == [old_stray.as_uri()], dry
    assert old_stray.exists()
    report = floe_table(server, "remove-orphans", TABLE)
    assert report["files_deleted"] == 1 and report["kept_young"] >= 1, report
    assert not old_stray.exists()
    assert fresh_stray.exists() and outside.exists()
    assert data_files_on_disk(table) == live | {str(fresh_stray)}
    table = cat.load_table(TABLE)
    assert row_hash(table.scan().to_arrow()) == expected
    assert row_hash(duckdb_rows(duckdb_con, table)) == expected

    # With no window, the fresh stray goes too; nothing referenced does.
    report = floe_table(server, "remove-orphans", TABLE, "--older-than", "0")
    assert not fresh_stray.exists()
    assert data_files_on_disk(table) == live
    assert row_hash(cat.load_table(TABLE).scan().to_arrow()) == expected


#: kill -9 of the floe server during the compaction race (every other one also kills the
#: running compaction).
KILLS = int(os.environ.get("FLOE_MAINT_KILLS", "10"))


def _referenced_everywhere(table) -> set[str]:
    """Data files and manifests any snapshot of `table` references (local paths)."""
    refs = {str(local_path(p)) for p in table.inspect.all_manifests().column("path").to_pylist()}
    for snap in table.metadata.snapshots:
        refs.add(str(local_path(snap.manifest_list)))
        refs |= {str(local_path(p)) for p in table.inspect.files(snapshot_id=snap.snapshot_id)
                 .column("file_path").to_pylist()}
    return refs


def _open_maintenance_attempts(server) -> set[str]:
    con = sqlite3.connect(f"file:{server.catalog_db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT attempt FROM floe_sink_attempts WHERE pipeline = 'floe.maintenance'").fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}


def test_compaction_racing_a_crash_looping_ingest(floe_server):
    """floe's sink commits every second under load while `floe table compact` runs back to back
    on the same table; the server is killed with SIGKILL KILLS times, and every other kill also
    kills the running compaction. Appends never conflict with a rewrite: every acknowledged row
    is in the table exactly once, after every kill every file the current snapshot references
    exists, and every file a killed compaction left is either referenced or named after an
    attempt still recorded (so the next run after the staleness window cleans it)."""
    seed = int(os.environ.get("FLOE_CRASH_SEED") or random.SystemRandom().randrange(2**31))
    print(f"compaction crash loop seed {seed}")
    rng = random.Random(seed)
    first = make_events("warm", 20)
    assert_accepted(floe_server.post_events(first), 20)
    wait_for_rows(floe_server, 20)
    acked: list[str] = [e["id"] for e in first]
    sent: list[str] = list(acked)
    stop = threading.Event()
    errors: list[str] = []
    compactions: list[int] = []
    current: list[subprocess.Popen] = []
    deadline = time.monotonic() + KILLS * 6 + 60

    def ingest():
        n = 0
        client_rng = random.Random(seed + 1)
        try:
            for _ in range(20_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                size = client_rng.randint(1, 30)
                events = make_events("live", size, start=n)
                n += size
                sent.extend(e["id"] for e in events)
                r = try_post_events(floe_server.url, events, timeout=15)
                if not isinstance(r, BaseException) and r.status == 200:
                    acked.extend(e["id"] for e in events)
                elif not isinstance(r, BaseException) and r.status not in (429, 503):
                    errors.append(f"ingest {r.status}: {r.body[:200]!r}")
                time.sleep(0.02)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"ingest thread: {e!r}")

    def compact_loop():
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                p = subprocess.Popen(
                    [str(floe_bin_path()), "table", "compact", "analytics.events", "--config",
                     str(floe_server.config_path), "--json"],
                    cwd=floe_server.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
                current[:] = [p]
                out, err = p.communicate(timeout=120)
                compactions.append(p.returncode)
                if p.returncode not in (0, -signal.SIGKILL):
                    errors.append(f"compact exit {p.returncode}: {err.decode(errors='replace')[-2000:]}")
                time.sleep(0.2)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"compaction thread: {e!r}")

    threads = [threading.Thread(target=ingest, daemon=True), threading.Thread(target=compact_loop, daemon=True)]
    for t in threads:
        t.start()
    try:
        for k in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.5))
            floe_server.kill9()
            if k % 2 == 1 and current and current[0].poll() is None:
                current[0].kill()
            table = sql_catalog(floe_server).load_table("analytics.events")
            missing = [p for p in table.inspect.files().column("file_path").to_pylist() if not local_path(p).exists()]
            assert not missing, f"seed {seed}, kill {k}: the current snapshot references missing files {missing[:3]}"
            time.sleep(rng.uniform(0.0, 0.3))
            floe_server.start()
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
    assert not errors, f"seed {seed}: {errors[:5]}"
    assert compactions.count(0) >= 1, f"seed {seed}: no compaction finished: {compactions}"

    table = wait_for_ids(floe_server, acked, timeout=90, settle=3.0)
    counts = collections.Counter(table.column("id").to_pylist())
    dupes = [i for i, c in counts.items() if c > 1]
    assert not dupes, f"seed {seed}: duplicated rows {dupes[:5]}"
    assert set(counts) <= set(sent), f"seed {seed}: rows never sent"
    assert set(acked) <= set(counts)

    table = sql_catalog(floe_server).load_table("analytics.events")
    ops = collections.Counter(s.summary.operation.value for s in table.metadata.snapshots)
    assert ops["replace"] >= 1 and ops["append"] >= 1, ops
    refs = _referenced_everywhere(table)
    open_attempts = _open_maintenance_attempts(floe_server)
    root = local_path(table.metadata.location)
    leaked = [str(p) for p in root.rglob("floe-compact-*")
              if p.is_file() and str(p) not in refs and not any(a in p.name for a in open_attempts)]
    assert not leaked, f"seed {seed}: compaction files neither referenced nor tracked: {leaked[:5]}"


def test_automatic_maintenance_compacts_reports_metrics_and_shows_failures(floe_server_factory):
    """`[sinks.maintenance]` with a 10 s interval: floe compacts its own table in the background
    while it ingests, reports the table in /metrics, and shows a failed round in /healthz (a
    manifest corrupted under it) while ingest goes on."""
    server = floe_server_factory(sink_extra='maintenance = { interval = "10s", min_input_files = 2 }')
    ids: list[str] = []
    for k in range(6):
        events = make_events(f"auto{k}", 10)
        assert_accepted(server.post_events(events), 10)
        ids.extend(e["id"] for e in events)
        time.sleep(1.2)  # one commit each
    wait_for_ids(server, ids)

    def compacted():
        table = sql_catalog(server).load_table("analytics.events")
        return any(s.summary.operation.value == "replace" for s in table.metadata.snapshots)

    deadline = time.monotonic() + 60
    while not compacted():
        assert time.monotonic() < deadline, "no background compaction within 60 s"
        time.sleep(1.0)
    samples = metrics_samples(server)
    assert metric_value(samples, "floe_maintenance_runs_total", table="analytics.events") >= 1
    assert metric_value(samples, "floe_maintenance_last_run_success", table="analytics.events") == 1
    assert metric_value(samples, "floe_maintenance_files_compacted_total", table="analytics.events") >= 2
    table = sql_catalog(server).load_table("analytics.events")
    ids_exactly_once_in(table.scan().to_arrow(), ids)

    # Corrupt a live data file: the next round that compacts its partition fails and says so
    # in /healthz and /metrics; ingest goes on (appends read no data file).
    victim = local_path(table.inspect.files().column("file_path").to_pylist()[0])
    victim.write_bytes(b"not a parquet file")
    more = make_events("after", 20)
    assert_accepted(server.post_events(more), 20)
    deadline = time.monotonic() + 60
    while True:
        status, body = healthz(server)
        failing = [m for m in body.get("failing_maintenance", []) if m["table"] == "analytics.events"]
        if failing:
            break
        assert time.monotonic() < deadline, f"no maintenance failure in /healthz within 60 s: {body}"
        time.sleep(1.0)
    assert status == 200 and body["status"] == "degraded", body
    assert failing[0]["error"], failing
    assert metric_value(metrics_samples(server), "floe_maintenance_last_run_success", table="analytics.events") == 0
    assert not body["failing_sinks"], body
    committed = metric_value(metrics_samples(server), "floe_sink_rows_committed_total", sink="events_table") or 0
    last = make_events("last", 10)
    assert_accepted(server.post_events(last), 10)
    deadline = time.monotonic() + 30
    while (metric_value(metrics_samples(server), "floe_sink_rows_committed_total", sink="events_table") or 0) \
            < committed + 10:
        assert time.monotonic() < deadline, "the sink stopped committing"
        time.sleep(0.5)


def ids_exactly_once_in(table: pa.Table, ids: list[str]) -> None:
    counts = collections.Counter(table.column("id").to_pylist())
    assert set(counts) == set(ids) and all(c == 1 for c in counts.values()), \
        f"{len(counts)} distinct ids for {len(ids)} sent, max count {max(counts.values(), default=0)}"


DEL_TABLE = "maint.deletes"
DEL_APPENDS = 20
DEL_ROWS = 50


@pytest.fixture(scope="module")
def delete_table(module_floe_server_factory):
    """A running floe and DEL_TABLE (id, bucket, ts): 20 PyIceberg appends of 50 rows, partitioned
    by identity(bucket); row i has ts = 2026-01-01 + i hours."""
    import datetime as dt

    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    server = module_floe_server_factory()
    cat = rest_catalog(server)
    cat.create_namespace("maint")
    arrow_schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("bucket", pa.int32(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ])
    probe = cat.create_table("maint.probe_del", schema=arrow_schema)
    iceberg_schema = probe.schema()
    cat.drop_table("maint.probe_del")
    spec = PartitionSpec(PartitionField(source_id=iceberg_schema.find_field("bucket").field_id, field_id=1000,
                                        transform=IdentityTransform(), name="bucket"))
    table = cat.create_table(DEL_TABLE, schema=iceberg_schema, partition_spec=spec)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for k in range(DEL_APPENDS):
        ids = list(range(k * DEL_ROWS, (k + 1) * DEL_ROWS))
        table.append(pa.Table.from_pydict({
            "id": ids,
            "bucket": [i % 4 for i in ids],
            "ts": [base + dt.timedelta(hours=i) for i in ids],
        }, schema=arrow_schema))
    return server


def test_delete_where_drops_whole_files_and_rewrites_the_rest(delete_table, duckdb_con):
    server = delete_table
    cat = rest_catalog(server)
    before = cat.load_table(DEL_TABLE).scan().to_arrow()
    all_ids = sorted(before.column("id").to_pylist())
    assert len(all_ids) == DEL_APPENDS * DEL_ROWS

    # Refused conditions change nothing and say why.
    snapshot = cat.load_table(DEL_TABLE).metadata.current_snapshot_id
    for bad, needle in [("nope = 1", "nope"), ("id", "boolean"), ("id IN (SELECT 1)", "subquer")]:
        result = run_floe("table", "delete", DEL_TABLE, "--where", bad, "--config", server.config_path,
                          cwd=server.workdir)
        assert result.returncode == 1, (bad, result.stdout, result.stderr)
        assert needle in result.stderr.lower(), (bad, result.stderr)
    assert cat.load_table(DEL_TABLE).metadata.current_snapshot_id == snapshot

    dry = floe_table(server, "delete", DEL_TABLE, "--where", "bucket = 1", "--dry-run")
    assert dry["files_dropped"] == DEL_APPENDS and dry["files_rewritten"] == 0 and dry["commits"] == 0, dry
    assert cat.load_table(DEL_TABLE).metadata.current_snapshot_id == snapshot

    # A whole partition: every file of bucket 1 is dropped, none rewritten.
    report = floe_table(server, "delete", DEL_TABLE, "--where", "bucket = 1")
    assert report["files_dropped"] == DEL_APPENDS and report["files_rewritten"] == 0, report
    assert report["rows_deleted"] == len(all_ids) // 4 and report["commits"] == 1, report
    table = cat.load_table(DEL_TABLE)
    assert table.metadata.current_snapshot().summary.operation.value == "delete"
    want = [i for i in all_ids if i % 4 != 1]
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == want

    # Some rows of every remaining file: rewritten without them.
    report = floe_table(server, "delete", DEL_TABLE, "--where", "id % 10 = 3 OR ts < TIMESTAMP '2026-01-02T00:00:00Z'")
    assert report["files_rewritten"] > 0 and report["commits"] == 1, report
    want = [i for i in want if i % 10 != 3 and i >= 24]
    table = cat.load_table(DEL_TABLE)
    assert table.metadata.current_snapshot().summary.operation.value == "overwrite"
    after = table.scan().to_arrow()
    assert sorted(after.column("id").to_pylist()) == want
    # The rows kept are identical, column by column.
    kept_before = {r["id"]: r for r in before.to_pylist() if r["id"] in set(want)}
    assert {r["id"]: r for r in after.to_pylist()} == kept_before
    loc = table.metadata_location.replace("'", "''")
    duck = duckdb_con.execute(f"SELECT id FROM iceberg_scan('{loc}') ORDER BY id").fetchall()
    assert [r[0] for r in duck] == want
    # Nothing matches: no commit.
    report = floe_table(server, "delete", DEL_TABLE, "--where", "id < 0")
    assert report["commits"] == 0 and report["rows_deleted"] == 0, report


def test_retention_drops_expired_rows_in_the_background(floe_server_factory):
    """`retention = "30d"` on `ts`: the rows older than 30 days go (whole files by their
    statistics, straddling files rewritten), the others stay exactly once."""
    import datetime as dt

    server = floe_server_factory(
        sink_extra='maintenance = { interval = "10s", retention = "30d", retention_column = "ts" }')
    now = dt.datetime.now(dt.timezone.utc)
    old = make_events("old", 30)
    for e in old:
        e["ts"] = (now - dt.timedelta(days=60)).isoformat().replace("+00:00", "Z")
    fresh = make_events("fresh", 30)
    for e in fresh:
        e["ts"] = (now - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    mixed = make_events("mixed", 30)
    for i, e in enumerate(mixed):
        e["ts"] = (now - dt.timedelta(days=90 if i % 2 else 2)).isoformat().replace("+00:00", "Z")
    for batch in (old, fresh, mixed):
        assert_accepted(server.post_events(batch), len(batch))
        time.sleep(1.2)
    wanted = [e["id"] for e in fresh] + [e["id"] for i, e in enumerate(mixed) if not i % 2]
    deadline = time.monotonic() + 90
    while True:
        table = sql_catalog(server).load_table("analytics.events")
        ops = [s.summary.get("floe.maintenance") for s in table.metadata.snapshots]
        ids = table.scan().to_arrow().column("id").to_pylist()
        if "retention" in ops and not any(i.startswith("old") for i in ids) and len(ids) == len(wanted):
            break
        assert time.monotonic() < deadline, f"retention did not run within 90 s: {ops}, {len(ids)} rows"
        time.sleep(1.0)
    ids_exactly_once_in(table.scan().to_arrow(), wanted)


MAN_TABLE = "maint.manifests"
MAN_APPENDS = 40


def _bucket_spec(iceberg_schema):
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    bucket_id = iceberg_schema.find_field("bucket").field_id
    return PartitionSpec(PartitionField(source_id=bucket_id, field_id=1000, transform=IdentityTransform(),
                                        name="bucket"))


def _create_bucketed(cat, name: str, properties: dict[str, str] | None = None):
    probe = f"{name}_probe"
    iceberg_schema = cat.create_table(probe, schema=schema()).schema()
    cat.drop_table(probe)
    return cat.create_table(name, schema=iceberg_schema, partition_spec=_bucket_spec(iceberg_schema),
                            properties=properties or {})


def test_rewrite_manifests_merges_the_pile_and_moves_no_file(module_floe_server_factory, duckdb_con):
    """40 PyIceberg appends leave 40 manifests; `floe table rewrite-manifests` merges them into
    one without touching a data file: PyIceberg's `inspect.manifests` shows one, the file list,
    the rows (PyIceberg, DuckDB), a partition filter and time travel are all unchanged."""
    server = module_floe_server_factory()
    cat = rest_catalog(server)
    if ("maint",) not in cat.list_namespaces():
        cat.create_namespace("maint")
    table = _create_bucketed(cat, MAN_TABLE)
    for k in range(MAN_APPENDS):
        table.append(batch(k))
    table = cat.load_table(MAN_TABLE)
    assert len(table.inspect.manifests()) == MAN_APPENDS, "one manifest per append"
    before = table.scan().to_arrow()
    files_before = sorted(table.inspect.files().column("file_path").to_pylist())
    old_snapshot = table.metadata.current_snapshot_id

    dry = floe_table(server, "rewrite-manifests", MAN_TABLE, "--dry-run")
    assert dry["manifests_before"] == MAN_APPENDS and dry["manifests_rewritten"] == MAN_APPENDS, dry
    assert dry["manifests_after"] == 1 and dry["commits"] == 0, dry
    assert cat.load_table(MAN_TABLE).metadata.current_snapshot_id == old_snapshot, "a dry run changes nothing"

    report = floe_table(server, "rewrite-manifests", MAN_TABLE)
    assert report["manifests_rewritten"] == MAN_APPENDS and report["manifests_written"] == 1, report
    assert report["manifests_after"] == 1 and report["commits"] == 1, report
    table = cat.load_table(MAN_TABLE)
    manifests = table.inspect.manifests()
    assert len(manifests) == 1, manifests.to_pylist()
    assert manifests.column("existing_data_files_count").to_pylist() == [MAN_APPENDS * BUCKETS]
    snapshot = table.metadata.current_snapshot()
    assert snapshot.summary.operation.value == "replace"
    assert snapshot.summary["floe.maintenance"] == "rewrite-manifests"
    assert sorted(table.inspect.files().column("file_path").to_pylist()) == files_before, "no data file moved"
    assert row_hash(table.scan().to_arrow()) == row_hash(before)
    assert row_hash(duckdb_rows(duckdb_con, table)) == row_hash(before), "DuckDB reads the same rows"
    one = table.scan(row_filter="bucket == 1").to_arrow()
    assert one.num_rows == MAN_APPENDS * ROWS // BUCKETS and set(one.column("bucket").to_pylist()) == {1}
    assert row_hash(table.scan(snapshot_id=old_snapshot).to_arrow()) == row_hash(before), "time travel"

    again = floe_table(server, "rewrite-manifests", MAN_TABLE)
    assert again["commits"] == 0 and again["skipped"], again


def test_tables_no_sink_writes_follow_their_table_properties(floe_server_factory):
    """A PyIceberg table with `floe.maintenance.enabled = true` is compacted by floe in the
    background on the policy its properties set; one whose properties do not validate shows in
    /healthz naming the property; a table without the opt-in is left alone."""
    server = floe_server_factory()
    cat = rest_catalog(server)
    cat.create_namespace("props")
    policy = {
        "floe.maintenance.enabled": "true",
        "floe.maintenance.interval": "10s",
        "floe.maintenance.min-input-files": "2",
        "history.expire.min-snapshots-to-keep": "3",
    }
    opted = _create_bucketed(cat, "props.opted", policy)
    left = _create_bucketed(cat, "props.left")
    _create_bucketed(cat, "props.bad", {"floe.maintenance.enabled": "true", "floe.maintenance.retain-last": "0"})
    for k in range(6):
        opted.append(batch(k))
        left.append(batch(k))
    expected = row_hash(cat.load_table("props.opted").scan().to_arrow())
    server.restart()  # its first table scan runs a few seconds after start

    def compacted() -> bool:
        table = sql_catalog(server).load_table("props.opted")
        return any(s.summary.operation.value == "replace" for s in table.metadata.snapshots)

    deadline = time.monotonic() + 90
    while not compacted():
        assert time.monotonic() < deadline, f"no background compaction within 90 s\n{server.log_tail()}"
        time.sleep(1.0)
    table = sql_catalog(server).load_table("props.opted")
    assert len(table.inspect.files()) == BUCKETS, "one file per partition"
    assert row_hash(table.scan().to_arrow()) == expected
    status, body = healthz(server)
    failing = {m["table"]: m["error"] for m in body.get("failing_maintenance", [])}
    assert "props.bad" in failing and "floe.maintenance.retain-last" in failing["props.bad"], body
    assert "props.opted" not in failing and "props.left" not in failing, body
    left = sql_catalog(server).load_table("props.left")
    assert not any(s.summary.operation.value == "replace" for s in left.metadata.snapshots), "not opted in"
    assert len(left.inspect.files()) == 6 * BUCKETS
