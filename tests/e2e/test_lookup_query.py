"""Point lookups (`GET /v1/tables/{t}/rows`, `floe get`) and SQL over the tables (`POST /v1/query`,
`floe sql`): time travel, metadata tables against PyIceberg's `inspect`, EXPLAIN, output formats,
and the row / time limits. One server for the module: two commits of known rows."""

import io
import json
import time
import urllib.parse

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, assert_error_body, http_get, http_request
from floe_e2e.server import run_floe
from floe_e2e.tables import load_table, wait_for_ids

FIRST = make_events("lk", 60)
SECOND = make_events("lk2", 30)


@pytest.fixture(scope="module")
def server(module_floe_server_factory):
    s = module_floe_server_factory(
        partition_by=["ns", "type"],
        sink_extra='bloom_filter_columns = ["id"]',
        limits={"query_max_rows": 50, "query_timeout_seconds": 20},
    )
    assert_accepted(s.post_events(FIRST), len(FIRST))
    wait_for_ids(s, [e["id"] for e in FIRST])
    s.first_snapshot = load_table(s).current_snapshot().snapshot_id
    time.sleep(0.05)
    s.between_ms = int(time.time() * 1000)
    time.sleep(0.05)
    assert_accepted(s.post_events(SECOND), len(SECOND))
    wait_for_ids(s, [e["id"] for e in SECOND])
    return s


def rows_url(server, table="analytics.events", **params):
    return f"{server.url}/v1/tables/{table}/rows?{urllib.parse.urlencode(params)}"


def query(server, sql, fmt=None, accept=None):
    body = {"sql": sql}
    if fmt:
        body["format"] = fmt
    headers = {"Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    return http_request("POST", f"{server.url}/v1/query", json.dumps(body).encode(), headers)


# --- lookups -------------------------------------------------------------------------------------


def test_lookup_by_key(server):
    e = FIRST[17]
    resp = http_get(rows_url(server, ns=e["ns"], type=e["type"], id=e["id"]))
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body["count"] == 1 and [r["id"] for r in body["rows"]] == [e["id"]]
    row = body["rows"][0]
    assert row["ns"] == e["ns"] and row["seq"] == 17 and row["type_upper"] == e["type"].upper()
    assert json.loads(row["data"]) == e["data"]
    stats = body["stats"]
    # 9 (ns, type) partitions per commit, 2 commits: all but this partition's files are skipped.
    assert stats["files_pruned_by_partition"] >= stats["files_total"] - 2, stats
    assert stats["files_read"] <= 2, stats


def test_lookup_typed_values_and_limit(server):
    resp = http_get(rows_url(server, seq=5))
    assert resp.status == 200, resp.body
    assert [r["id"] for r in resp.json()["rows"]] == ["lk-00005", "lk2-00005"] or sorted(
        r["id"] for r in resp.json()["rows"]) == ["lk-00005", "lk2-00005"]
    resp = http_get(rows_url(server, ns="billing", limit=3))
    assert resp.status == 200 and resp.json()["count"] == 3
    resp = http_get(rows_url(server, ns="nowhere"))
    assert resp.status == 200 and resp.json()["rows"] == []


def test_lookup_errors(server):
    body = assert_error_body(http_get(rows_url(server, colour="red")), 400)
    assert "colour" in body["error"]["message"]
    body = assert_error_body(http_get(rows_url(server, seq="twelve")), 400)
    assert "seq" in body["error"]["message"]
    body = assert_error_body(http_get(rows_url(server, ts="yesterday")), 400)
    assert "ts" in body["error"]["message"]
    assert_error_body(http_get(rows_url(server, table="analytics.nope", id="x")), 404)
    body = assert_error_body(http_get(rows_url(server, ns="billing", limit=51)), 400)
    assert body["error"].get("limit") == "limits.query_max_rows"


def test_lookup_time_travel(server):
    e = SECOND[3]
    now = http_get(rows_url(server, id=e["id"])).json()
    assert now["count"] == 1
    old = http_get(rows_url(server, id=e["id"], snapshot_id=server.first_snapshot)).json()
    assert old["count"] == 0 and old["snapshot_id"] == server.first_snapshot
    asof = http_get(rows_url(server, id=e["id"], as_of=server.between_ms)).json()
    assert asof["count"] == 0 and asof["snapshot_id"] == server.first_snapshot
    asof = http_get(rows_url(server, id=FIRST[3]["id"], as_of=server.between_ms)).json()
    assert asof["count"] == 1


def test_floe_get_cli(server, tmp_path):
    e = FIRST[8]
    r = run_floe("get", "analytics.events", f"ns={e['ns']}", f"id={e['id']}", "--url", server.url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert [x["id"] for x in rows] == [e["id"]]
    r = run_floe("get", "analytics.events", "nocolumn=1", "--url", server.url, cwd=tmp_path)
    assert r.returncode != 0 and "nocolumn" in r.stderr
    r = run_floe("get", "analytics.events", f"id={SECOND[0]['id']}", "--snapshot-id", str(server.first_snapshot),
                 "--url", server.url, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout


# --- SQL -----------------------------------------------------------------------------------------


def test_sql_time_travel(server):
    n_old = query(server, f'SELECT count(*) AS n FROM analytics."events$snapshot_{server.first_snapshot}"')
    assert n_old.status == 200, n_old.body
    assert n_old.json()["rows"] == [{"n": len(FIRST)}]
    n_asof = query(server, f'SELECT count(*) AS n FROM analytics."events$as_of_{server.between_ms}"')
    assert n_asof.json()["rows"] == [{"n": len(FIRST)}]
    n_now = query(server, "SELECT count(*) AS n FROM analytics.events")
    assert n_now.json()["rows"] == [{"n": len(FIRST) + len(SECOND)}]
    bad = assert_error_body(query(server, 'SELECT * FROM analytics."events$snapshot_1"'), 400)
    assert "1" in bad["error"]["message"]


def test_metadata_tables_match_pyiceberg(server):
    table = load_table(server)
    want = sorted(table.inspect.snapshots().column("snapshot_id").to_pylist())
    got = query(server, 'SELECT snapshot_id FROM analytics."events$snapshots" ORDER BY snapshot_id').json()["rows"]
    assert [r["snapshot_id"] for r in got] == want

    files = table.inspect.files()
    want_files = sorted(zip(files.column("file_path").to_pylist(), files.column("record_count").to_pylist()))
    got = query(server, 'SELECT file_path, record_count FROM analytics."events$files" ORDER BY file_path')
    assert got.status == 200, got.body
    assert [(r["file_path"], r["record_count"]) for r in got.json()["rows"]] == want_files

    manifests = query(server, 'SELECT count(*) AS n FROM analytics."events$manifests"').json()["rows"]
    assert manifests[0]["n"] == len(table.inspect.manifests())

    parts = query(server, 'SELECT partition, record_count, file_count FROM analytics."events$partitions"')
    assert parts.status == 200, parts.body
    rows = parts.json()["rows"]
    assert sum(r["record_count"] for r in rows) == len(FIRST) + len(SECOND)
    want_parts = {(p["ns"], p["type"]) for p in table.inspect.partitions().column("partition").to_pylist()}
    assert {(json.loads(r["partition"])["ns"], json.loads(r["partition"])["type"]) for r in rows} == want_parts

    hist = query(server, 'SELECT snapshot_id, is_current_ancestor FROM analytics."events$history"').json()["rows"]
    want_hist = table.inspect.history()
    assert sorted(r["snapshot_id"] for r in hist) == sorted(want_hist.column("snapshot_id").to_pylist())
    assert all(r["is_current_ancestor"] for r in hist)


def test_explain_shows_pushdown(server):
    resp = query(server, "EXPLAIN SELECT id FROM analytics.events WHERE ns = 'billing'")
    assert resp.status == 200, resp.body
    plan = " ".join(str(v) for r in resp.json()["rows"] for v in r.values())
    # floe's ParallelIcebergScan (files spread over the cores) replaces iceberg-datafusion's scan.
    assert "ParallelIcebergScan" in plan, plan
    assert "predicate:[ns = billing]" in plan.replace('"', ""), plan
    assert "projection:[ns,id]" in plan, plan  # only the columns used are read


def test_json_functions_in_queries(server):
    # The query path has the pipelines' SQL surface: JSON functions and ->/->> on json columns.
    e = FIRST[7]
    sql = (
        "SELECT json_get_int(data, 'i') AS i, data->>'i' AS i_text, json_length(data, 'tags') AS n_tags "
        f"FROM analytics.events WHERE id = '{e['id']}'"
    )
    resp = query(server, sql)
    assert resp.status == 200, resp.body
    assert resp.json()["rows"] == [{"i": 7, "i_text": "7", "n_tags": len(e["data"]["tags"])}]


def test_formats(server):
    sql = "SELECT ns, count(*) AS n FROM analytics.events GROUP BY ns ORDER BY ns"
    want = query(server, sql).json()["rows"]
    arrow = query(server, sql, fmt="arrow")
    assert arrow.status == 200 and "arrow" in arrow.header("content-type")
    t = pa.ipc.open_file(io.BytesIO(arrow.body)).read_all()
    assert t.to_pylist() == want
    parquet = query(server, sql, accept="application/vnd.apache.parquet")
    assert parquet.status == 200
    assert pq.read_table(io.BytesIO(parquet.body)).to_pylist() == want
    csv = query(server, sql, fmt="csv")
    assert csv.body.decode().splitlines()[0] == "ns,n"
    empty = query(server, "SELECT id FROM analytics.events WHERE ns = 'nowhere'", fmt="parquet")
    assert pq.read_table(io.BytesIO(empty.body)).num_rows == 0


def test_cli_sql_formats(server, tmp_path):
    out = tmp_path / "r.parquet"
    r = run_floe("sql", "SELECT id FROM analytics.events ORDER BY id LIMIT 5", "--config", server.config_path,
                 "--format", "parquet", "--output", out, cwd=server.workdir)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).column("id").to_pylist() == sorted(e["id"] for e in FIRST + SECOND)[:5]
    out = tmp_path / "r.arrow"
    r = run_floe("sql", "SELECT count(*) AS n FROM analytics.events", "--config", server.config_path,
                 "--format", "arrow", "--output", out, cwd=server.workdir)
    assert r.returncode == 0, r.stderr
    assert pa.ipc.open_file(out).read_all().to_pylist() == [{"n": len(FIRST) + len(SECOND)}]


def test_row_limit(server):
    body = assert_error_body(query(server, "SELECT * FROM analytics.events"), 400)
    assert body["error"].get("limit") == "limits.query_max_rows", body
    assert "50" in body["error"]["message"]


def test_time_limit(server, tmp_path):
    # A cross join of generated rows runs far beyond a 0.2 s limit (set in a CLI config copy).
    cfg = tmp_path / "floe.toml"
    text = server.config_path.read_text().replace("query_timeout_seconds = 20", "query_timeout_seconds = 0.2")
    # The copy points at the server's data dir and warehouse (the catalog reads metadata only
    # inside its own warehouse).
    text = text.replace('data_dir = "floe-data"', f'data_dir = "{server.data_dir}"')
    cfg.write_text(text.replace('warehouse = "floe-data/warehouse"', f'warehouse = "{server.warehouse}"'))
    r = run_floe("sql", "SELECT count(*) FROM generate_series(1, 30000000) a, generate_series(1, 1000) b "
                 "WHERE a.value + b.value = -1", "--config", cfg, cwd=tmp_path)
    assert r.returncode != 0
    assert "limits.query_timeout_seconds" in r.stderr, r.stderr
