"""HTTP in, Iceberg out: what is sent is what PyIceberg and DuckDB read back.

Four requests (JSON array, NDJSON, gzip'd array, gzip'd NDJSON) with unique ids, several `ns`
values and some `drop.me` rows that the pipeline filters out. Then, row by row (sorted by id):
PyIceberg == what was sent (after the WHERE, plus `type_upper`), DuckDB == PyIceberg. Also the
table's shape: `ts` a UTC microsecond timestamp, `data` JSON text, identity partition on `ns`,
zstd Parquet files, column statistics in the manifests.
"""

import collections
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, StringType, TimestamptzType

from floe_e2e.engines import duckdb_scan
from floe_e2e.events import TABLE_COLUMNS, expected_rows, parse_ts
from floe_e2e.http import assert_accepted
from floe_e2e.tables import load_table, local_path, wait_for_rows


def _requests():
    """Four batches of events; every `ts` input form and `data` shape appears at least once."""
    array = [
        {"ns": "app.web", "type": "click", "id": "e2e-000", "ts": "2025-03-01T08:00:00Z",
         "data": {"page": "/home", "n": 1, "nested": {"deep": [1, 2, {"x": None}]}}, "visibility": "public", "seq": 0},
        {"ns": "app.web", "type": "view", "id": "e2e-001", "ts": "2025-03-01T08:00:00.123456Z",
         "data": ["a", 1, True, None], "seq": 1},
        {"ns": "app.api", "type": "purchase", "id": "e2e-002", "ts": 1740816000123,  # epoch millis
         "data": {"amount": 12.5, "currency": "EUR", "unicode": "caf\u00e9 \u2603 \U0001F600"}, "visibility": "private"},
        {"ns": "billing", "type": "click", "id": "e2e-003", "ts": "2025-03-01T10:00:00.5+02:00",  # offset
         "data": None, "seq": -7},
        {"ns": "drop.me", "type": "click", "id": "e2e-004", "ts": "2025-03-01T08:00:04Z", "data": {"dropped": True}},
        {"ns": "billing", "type": "view", "id": "e2e-005", "ts": "2025-03-01T08:00:05.000001Z", "seq": 2**62},
    ]
    ndjson = [
        {"ns": "app.api", "type": "view", "id": "e2e-100", "ts": "2025-03-02T00:00:00Z", "data": {"k": "v"}},
        {"ns": "app.web", "type": "purchase", "id": "e2e-101", "ts": 1740873600000, "data": {"list": [[1], [2, 3]]},
         "visibility": "public", "seq": 101},
        {"ns": "drop.me", "type": "view", "id": "e2e-102", "ts": "2025-03-02T00:00:02Z"},
        {"ns": "billing", "type": "click", "id": "e2e-103", "ts": "2025-03-01T23:59:59.999-05:00", "data": {},
         "seq": 0},
        {"ns": "app.api", "type": "click", "id": "e2e-104", "ts": "2025-03-02T00:00:04.25Z",
         "data": {"quote": "he said \"hi\"\n", "num": 1e-3}},
    ]
    gz_array = [
        {"ns": "app.web", "type": "view", "id": f"e2e-2{i:02d}", "ts": 1740900000000 + i * 1001,
         "data": {"i": i}, "seq": 200 + i, **({"visibility": "team"} if i % 2 else {})}
        for i in range(20)
    ] + [{"ns": "drop.me", "type": "view", "id": "e2e-299", "ts": 1740900000000}]
    gz_ndjson = [
        {"ns": ("app.api", "billing", "ops")[i % 3], "type": ("click", "view")[i % 2], "id": f"e2e-3{i:02d}",
         "ts": f"2025-03-03T12:{i:02d}:00.{i:06d}Z", "data": [i, {"sq": i * i}], "seq": i}
        for i in range(30)
    ]
    return [
        (array, dict(fmt="json")),
        (ndjson, dict(fmt="ndjson")),
        (gz_array, dict(fmt="json", gzip=True)),
        (gz_ndjson, dict(fmt="ndjson", gzip=True)),
    ]


def _table_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def _assert_rows_equal(got: list[dict], want: list[dict], who: str) -> None:
    assert [r["id"] for r in got] == [r["id"] for r in want], f"{who}: ids differ"
    for g, w in zip(got, want):
        for col in TABLE_COLUMNS:
            gv, wv = g[col], w[col]
            if col == "data" and gv is not None:
                assert isinstance(gv, str), f"{who} row {w['id']}: data should be JSON text, got {gv!r}"
                gv = json.loads(gv)
            assert gv == wv, f"{who} row {w['id']} column {col}: got {g[col]!r}, want {wv!r}"


@pytest.fixture(scope="module")
def loaded(module_floe_server_factory):
    """One server for this module, after the four requests were accepted and committed.

    (server, events sent, expected rows sorted by id, table as read by PyIceberg)
    """
    floe_server = module_floe_server_factory()
    sent = []
    for events, kw in _requests():
        assert_accepted(floe_server.post_events(events, **kw), len(events))
        sent.extend(events)
    ids = [e["id"] for e in sent]
    assert len(ids) == len(set(ids))
    want = expected_rows(sent)
    table = wait_for_rows(floe_server, len(want), settle=2.0)
    return floe_server, sent, want, table


def test_pyiceberg_reads_what_was_sent(loaded):
    _server, _sent, want, table = loaded
    # the table's columns are the SELECT list, in its order
    assert table.column_names == TABLE_COLUMNS, f"columns: {table.column_names}, want {TABLE_COLUMNS}"
    got = _table_rows(table)
    assert len(got) == len(want), f"{len(got)} rows, want {len(want)} (drop.me rows must be filtered out)"
    assert not [r for r in got if r["ns"] == "drop.me"]
    _assert_rows_equal(got, want, "PyIceberg")


def test_duckdb_reads_the_same_as_pyiceberg(loaded, duckdb_con):
    server, _sent, want, table = loaded
    duck = duckdb_scan(duckdb_con, server)
    assert sorted(duck.column_names) == sorted(table.column_names)
    duck_rows = duck.to_pylist()
    assert len(duck_rows) == len(want)
    _assert_rows_equal(duck_rows, want, "DuckDB")
    assert duck_rows == _table_rows(table), "DuckDB and PyIceberg disagree"
    counts = duckdb_scan(duckdb_con, server, "").group_by("ns").aggregate([("id", "count")]).to_pylist()
    assert {r["ns"]: r["id_count"] for r in counts} == dict(collections.Counter(r["ns"] for r in want))


def test_ts_is_a_utc_microsecond_timestamp(loaded):
    server, sent, _want, table = loaded
    iceberg_type = load_table(server).schema().find_field("ts").field_type
    assert isinstance(iceberg_type, TimestamptzType), f"ts is {iceberg_type}, want timestamptz (UTC)"
    arrow_type = table.schema.field("ts").type
    assert pa.types.is_timestamp(arrow_type) and arrow_type.unit == "us", arrow_type
    assert arrow_type.tz in ("UTC", "+00:00", "Etc/UTC"), f"ts arrow tz is {arrow_type.tz!r}"
    by_id = {r["id"]: r for r in table.to_pylist()}
    # microsecond precision and offsets survive
    assert by_id["e2e-001"]["ts"] == parse_ts("2025-03-01T08:00:00.123456Z")
    assert by_id["e2e-001"]["ts"].microsecond == 123456
    assert by_id["e2e-005"]["ts"].microsecond == 1
    assert by_id["e2e-003"]["ts"] == parse_ts("2025-03-01T08:00:00.5Z")
    assert by_id["e2e-002"]["ts"] == parse_ts(1740816000123)


def test_column_types(loaded):
    server, *_ = loaded
    schema = load_table(server).schema()
    for name in ("ns", "type", "id", "data", "visibility", "type_upper"):
        assert isinstance(schema.find_field(name).field_type, StringType), f"{name}: {schema.find_field(name)}"
    assert isinstance(schema.find_field("seq").field_type, LongType), schema.find_field("seq")


def test_partitioned_by_ns(loaded):
    server, _sent, want, _table = loaded
    tbl = load_table(server)
    ns_field_id = tbl.schema().find_field("ns").field_id
    fields = tbl.spec().fields
    assert len(fields) == 1, f"spec: {tbl.spec()}"
    assert fields[0].source_id == ns_field_id and isinstance(fields[0].transform, IdentityTransform), tbl.spec()

    files = tbl.inspect.files().to_pylist()
    assert files, "no data files"
    partitions = collections.Counter(f["partition"]["ns"] for f in files)
    assert set(partitions) == {r["ns"] for r in want}, partitions
    for f in files:
        ns_values = set(pq.read_table(local_path(f["file_path"]), columns=["ns"]).column("ns").to_pylist())
        assert ns_values == {f["partition"]["ns"]}, f"{f['file_path']} holds ns {ns_values}, partition {f['partition']}"


def test_files_are_zstd_parquet_with_stats(loaded):
    server, _sent, want, _table = loaded
    files = load_table(server).inspect.files().to_pylist()
    assert sum(f["record_count"] for f in files) == len(want)
    for f in files:
        assert f["file_format"] == "PARQUET", f
        assert f["lower_bounds"], f"no lower_bounds in manifest for {f['file_path']}"
        assert f["upper_bounds"], f"no upper_bounds in manifest for {f['file_path']}"
        path = local_path(f["file_path"])
        assert path.is_file(), path
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows == f["record_count"]
        codecs = {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups)
                  for c in range(meta.num_columns)}
        assert codecs == {"ZSTD"}, f"{path}: compression {codecs}"
