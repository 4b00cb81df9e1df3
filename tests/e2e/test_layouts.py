"""Table layouts as outside readers see them: `sort_by`, `compression` with a level,
`row_group_size`, and floe writing into a table PyIceberg created.

Everything is read back with independent readers: PyIceberg for the table metadata (sort order,
properties), pyarrow's Parquet reader for the data files (codec, row groups, row order), DuckDB's
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
