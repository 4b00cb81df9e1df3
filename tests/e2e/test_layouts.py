"""Table layouts as outside readers see them: `sort_by`, `compression` with a level,
`row_group_size`, and floe writing into a table PyIceberg created.

Everything is read back with independent readers: PyIceberg for the table metadata (sort order,
properties, `inspect.files` / `inspect.partitions`, scan planning that prunes), pyarrow's Parquet reader for the data files (codec, row groups, row order), DuckDB's
iceberg extension for the rows.
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from floe_e2e.config import floe_config, sink_pipeline_toml
from floe_e2e.engines import duckdb_scan
from floe_e2e.events import PIPELINE_SELECT, make_events
from floe_e2e.metrics import healthz
from floe_e2e.server import wait_until
from floe_e2e.tables import ids_exactly_once, load_table, local_path, sql_catalog, wait_for_rows

#: Rows per Parquet row group the sorted sink asks for.
ROW_GROUP_ROWS = 40
#: Events sent to the sorted sink, in requests of `BATCH`.
EVENTS = 240
BATCH = 60

LAYOUT_SINK = f"""\
sort_by = ["ns", "ts DESC"]
compression = "gzip(5)"
row_group_size = {ROW_GROUP_ROWS}
target_file_size_mb = 64
"""


def data_files(table) -> list[str]:
    return [task.file.file_path for task in table.scan().plan_files()]


def test_sorted_gzip_files_with_small_row_groups(floe_server_factory, duckdb_con):
    server = floe_server_factory(partition_by=("type",), sink_extra=LAYOUT_SINK)
    events = make_events("lay", EVENTS)
    for i in range(0, EVENTS, BATCH):
        assert server.post_events(events[i:i + BATCH]).status == 200
    wait_for_rows(server, EVENTS)

    table = load_table(server)
    # The table's default sort order is the sink's sort_by, as Iceberg spells it.
    order = table.sort_order()
    schema = table.schema()
    assert [(schema.find_field(f.source_id).name, str(f.direction), str(f.null_order)) for f in order.fields] == [
        ("ns", "ASC", "NULLS FIRST"),
        ("ts", "DESC", "NULLS LAST"),
    ], order
    assert table.properties["write.parquet.compression-codec"] == "gzip"
    assert table.properties["write.parquet.compression-level"] == "5"

    files = data_files(table)
    assert files
    seen = 0
    for location in files:
        f = pq.ParquetFile(local_path(location))
        meta = f.metadata
        assert meta.num_row_groups >= 1
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            assert group.num_rows <= ROW_GROUP_ROWS, (location, g, group.num_rows)
            assert group.column(0).compression == "GZIP", group.column(0)
        rows = f.read(columns=["ns", "ts"]).to_pylist()
        seen += len(rows)
        # Sorted within the file: ns ascending, then ts descending.
        keys = [(r["ns"], -r["ts"].timestamp()) for r in rows]
        assert keys == sorted(keys), f"{location} is not sorted by ns, ts DESC"
    assert seen == EVENTS

    # PyIceberg's metadata tables show the configured layout: one partition per `type`, each
    # data file in exactly one of them with its row count, and per-file bounds.
    types = sorted({e["type"] for e in events})
    parts = table.inspect.partitions().to_pylist()
    assert sorted(p["partition"]["type"] for p in parts) == types, parts
    per_type = {t: sum(1 for e in events if e["type"] == t) for t in types}
    assert {p["partition"]["type"]: p["record_count"] for p in parts} == per_type
    inspected = table.inspect.files().to_pylist()
    assert sorted(f["file_path"] for f in inspected) == sorted(files)
    assert sum(f["record_count"] for f in inspected) == EVENTS
    for f in inspected:
        assert f["file_format"] == "PARQUET" and f["partition"]["type"] in types, f

    # A filtered scan prunes: a filter on the partition column plans only that partition's
    # files, and a filter on `ns` outside every file's bounds plans none.
    one = types[0]
    planned = [t.file.file_path for t in table.scan(row_filter=f"type = '{one}'").plan_files()]
    in_partition = [f["file_path"] for f in inspected if f["partition"]["type"] == one]
    assert sorted(planned) == sorted(in_partition) and len(planned) < len(files), (planned, files)
    assert list(table.scan(row_filter="ns = 'zzzz-no-such-ns'").plan_files()) == []
    assert table.scan(row_filter=f"type = '{one}'").to_arrow().num_rows == per_type[one]

    # DuckDB reads the same rows through the table's metadata.
    got = duckdb_scan(duckdb_con, server)
    assert got.num_rows == EVENTS
    ids_exactly_once(got, [e["id"] for e in events])


def outside_schema(extra_type: pa.DataType = pa.string()):
    """The default pipeline's columns in another order, with `id` of `extra_type`, plus an
    optional column `note` no pipeline writes."""
    return pa.schema([
        pa.field("id", extra_type, nullable=False),
        pa.field("note", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ns", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("data", pa.string()),
        pa.field("visibility", pa.string()),
        pa.field("seq", pa.int64()),
        pa.field("type_upper", pa.string()),
    ])


def outside_sink(name: str, table: str) -> str:
    return sink_pipeline_toml(name, table, f"to_{name}", f"INSERT INTO {name} {PIPELINE_SELECT} FROM events")


@pytest.mark.parametrize("compatible", [True, False], ids=["compatible", "wrong-type"])
def test_floe_writes_into_a_table_pyiceberg_created(floe_server_factory, compatible):
    server = floe_server_factory()
    server.stop()
    catalog = sql_catalog(server)
    try:
        catalog.create_table("analytics.made_outside", schema=outside_schema(pa.string() if compatible else pa.int64()))
    finally:
        catalog.engine.dispose()

    server.config_path.write_text(floe_config(server.port, extra=outside_sink("outside", "analytics.made_outside")))
    if not compatible:
        server.start()
        # The sink cannot open; /healthz names the sink and the column, nothing is written.
        def failing():
            status, body = healthz(server)
            return [s for s in body.get("failing_sinks", []) if s["sink"] == "outside"] or None

        [entry] = wait_until(failing, 30, "the outside sink to fail")
        assert '"id"' in entry["error"] and "long" in entry["error"] and "string" in entry["error"], entry
        assert load_table(server, "analytics.made_outside").scan().to_arrow().num_rows == 0
        return

    server.start()
    events = make_events("out", 30)
    assert server.post_events(events).status == 200
    got = wait_for_rows(server, 30, table="analytics.made_outside")
    # Columns matched by name; the column no pipeline writes is null.
    assert got.schema.names == outside_schema().names
    assert got.column("note").null_count == 30
    ids_exactly_once(got, [e["id"] for e in events])
    by_id = {r["id"]: r for r in got.to_pylist()}
    assert by_id["out-00001"]["ns"] == events[1]["ns"]
    assert by_id["out-00001"]["type_upper"] == events[1]["type"].upper()
