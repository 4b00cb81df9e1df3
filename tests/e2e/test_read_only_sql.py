"""SQL over the tables is read-only (issue 10): `POST /v1/query` and `floe sql` refuse writes,
DDL and statements with a 400 `read_only`, and nothing outside floe's places is written or read.
Multi-member gzip bodies are read whole and trailing garbage is a 400."""

import gzip
import json

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, http_request
from floe_e2e.server import run_floe


def _query(server, sql):
    return http_request("POST", f"{server.url}/v1/query", json.dumps({"sql": sql}).encode(),
                        {"Content-Type": "application/json"})


def test_writes_are_refused_over_http_and_cli(floe_server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me\n")
    target = outside / "copy.csv"
    for sql in [
        f"COPY (SELECT 1 AS a) TO '{target}'",
        f"COPY (SELECT 1 AS a) TO '{victim}' STORED AS CSV",
        f"CREATE EXTERNAL TABLE leak (line VARCHAR) STORED AS CSV LOCATION '{victim}'",
        "CREATE TABLE t AS SELECT 1 AS a",
        "SET datafusion.execution.batch_size = 1",
        "DROP TABLE analytics.events",
    ]:
        resp = _query(floe_server, sql)
        assert resp.status == 400, (sql, resp.status, resp.body)
        err = resp.json()["error"]
        assert err["code"] == "read_only" and "queries are read-only" in err["message"], (sql, err)
        cli = run_floe("sql", sql, "--config", floe_server.config_path, cwd=tmp_path)
        assert cli.returncode != 0 and "queries are read-only" in cli.stderr, (sql, cli)
    assert victim.read_text() == "keep me\n"
    assert not target.exists()
    resp = _query(floe_server, f"SELECT * FROM '{victim}'")
    assert resp.status == 400 and b"keep me" not in resp.body, resp.body
    assert _query(floe_server, "SELECT 1 AS one").status == 200
    assert http_request("GET", f"{floe_server.url}/healthz").status == 200


def test_gzip_with_two_members_is_read_whole_and_garbage_is_refused(floe_server):
    rows = make_events("gz2", 4)
    first = gzip.compress("\n".join(json.dumps(r) for r in rows[:2]).encode() + b"\n")
    second = gzip.compress("\n".join(json.dumps(r) for r in rows[2:]).encode() + b"\n")
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    url = f"{floe_server.url}/v1/streams/events/events"
    assert_accepted(http_request("POST", url, first + second, headers), 4)
    resp = http_request("POST", url, first + b"garbage", headers)
    assert resp.status == 400 and resp.json()["error"]["code"] == "bad_encoding", resp.body
