"""Tables on S3-compatible object storage (docs/storage.md): floe with `warehouse =
"s3://warehouse/floe"` on a real S3 server on loopback (s3s-fs, `floe_e2e.s3`), the stream log on
local disk.

- Data files, manifests and metadata land in the bucket, nothing in the local data dir;
  PyIceberg reads the table through floe's REST catalog with no storage settings of its own
  (floe hands out endpoint, region, path style and — `vend_credentials` — the keys), and through
  the catalog file; DuckDB reads it with its own S3 secret; `floe sql` and point lookups work.
- Credential vending follows the token's scope: a read token gets the endpoint, not the keys.
- Wrong credentials stop `floe serve` at start with an error naming the warehouse and what the
  store said; nothing was acknowledged.
- The store goes away mid-ingest, then comes back with keys floe does not have (/healthz names
  the failing sink), then with the right ones: every acknowledged row is there exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse

import pyarrow as pa
import pytest

from floe_e2e.engines import duckdb_scan
from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, http_get, http_request, try_post_events
from floe_e2e.metrics import healthz
from floe_e2e.s3 import (ACCESS_KEY, SECRET_KEY, WAREHOUSE, S3Server, duckdb_s3_secret, floe_s3_kwargs)
from floe_e2e.server import run_floe, wait_until
from floe_e2e.tables import ids_exactly_once, read_table, rest_catalog, wait_for_ids

TABLE_PREFIX = "floe/analytics/events/"


@pytest.fixture
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


def test_s3_end_to_end(s3, floe_server_factory, duckdb_con):
    server = floe_server_factory(**floe_s3_kwargs(s3), partition_by=["ns"],
                                 sink_extra='bloom_filter_columns = ["id"]')
    events = make_events("s3", 120)
    assert_accepted(server.post_events(events[:60]), 60)
    assert_accepted(server.post_events(events[60:]), 60)
    ids = [e["id"] for e in events]
    table = wait_for_ids(server, ids)
    ids_exactly_once(table, ids)

    # Everything of the table is in the bucket; the local data dir holds no warehouse.
    keys = s3.objects(TABLE_PREFIX)
    assert any(k.startswith(TABLE_PREFIX + "data/ns=") and k.endswith(".parquet") for k in keys), keys
    assert any(k.startswith(TABLE_PREFIX + "metadata/") and k.endswith(".metadata.json") for k in keys), keys
    assert any(k.endswith(".avro") for k in keys), keys
    assert not (server.data_dir / "warehouse").exists()

    # PyIceberg through floe's REST catalog: no S3 settings given, floe hands them out.
    cat = rest_catalog(server)
    t = cat.load_table("analytics.events")
    assert t.metadata_location.startswith(WAREHOUSE + "/analytics/events/metadata/")
    assert t.io.properties.get("s3.endpoint") == s3.endpoint
    ids_exactly_once(t.scan().to_arrow(), ids)
    files = t.inspect.files()
    assert files.num_rows >= 1
    assert all(p.startswith(WAREHOUSE + "/") for p in files.column("file_path").to_pylist())

    # DuckDB with its own S3 secret, over the metadata file the catalog points at.
    duckdb_s3_secret(duckdb_con, s3)
    ids_exactly_once(duckdb_scan(duckdb_con, server), ids)

    # floe's own SQL and point lookups read the bucket too.
    r = run_floe("sql", "SELECT count(*) AS n FROM analytics.events", "--config", server.config_path,
                 "--format", "csv", cwd=server.workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "120", r.stdout
    e = events[17]
    q = urllib.parse.urlencode({"ns": e["ns"], "id": e["id"]})
    resp = http_get(f"{server.url}/v1/tables/analytics.events/rows?{q}")
    assert resp.status == 200, resp.body
    assert [row["id"] for row in resp.json()["rows"]] == [e["id"]]

    # A table location outside the warehouse is refused, also in another bucket.
    body = {"name": "elsewhere", "location": "s3://other-bucket/x",
            "schema": {"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "a", "type": "string", "required": False}]}}
    resp = http_request("POST", f"{server.url}/iceberg/v1/namespaces/analytics/tables",
                        json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert resp.status == 400, resp.body
    assert b"bucket" in resp.body

    # An outside writer (PyIceberg, through the vended settings) writes a table into the bucket;
    # purging it deletes its objects.
    cat.create_table("analytics.scratch", schema=pa.schema([("k", pa.string())]))
    scratch = cat.load_table("analytics.scratch")
    scratch.append(pa.table({"k": ["x", "y"]}))
    assert s3.objects("floe/analytics/scratch/data/"), s3.objects("floe/analytics/scratch/")
    assert cat.load_table("analytics.scratch").scan().to_arrow().num_rows == 2
    cat.purge_table("analytics.scratch")
    wait_until(lambda: not s3.objects("floe/analytics/scratch/"), 20, "the purged table's objects to go")


def test_s3_credentials_are_vended_by_scope(s3, floe_server_factory):
    tokens = """
[[auth.tokens]]
token = "reader"
scopes = ["read"]

[[auth.tokens]]
token = "writer"
scopes = ["write"]
"""
    server = floe_server_factory(**floe_s3_kwargs(s3, extra=tokens))
    assert_accepted(server.post_events(make_events("v", 5), headers={"Authorization": "Bearer writer"}), 5)
    wait_until(lambda: rest_catalog(server, token="reader").table_exists("analytics.events"), 30,
               "the table to exist")

    def load(token):
        resp = http_get_auth(f"{server.url}/iceberg/v1/floe/namespaces/analytics/tables/events", token)
        assert resp.status == 200, resp.body
        return resp.json()["config"]

    reader, writer = load("reader"), load("writer")
    for config in (reader, writer):
        assert config["s3.endpoint"] == s3.endpoint and config["s3.path-style-access"] == "true", config
    assert "s3.secret-access-key" not in reader and "s3.access-key-id" not in reader, reader
    assert writer["s3.access-key-id"] == ACCESS_KEY and writer["s3.secret-access-key"] == SECRET_KEY
    resp = http_get_auth(f"{server.url}/iceberg/v1/config", "reader")
    assert resp.status == 200 and "s3.secret-access-key" not in resp.json()["defaults"], resp.body


def http_get_auth(url, token):
    return http_request("GET", url, None, {"Authorization": f"Bearer {token}"})


def test_s3_wrong_credentials_stop_floe_at_start(s3, floe_server_factory):
    server = floe_server_factory(start=False, **floe_s3_kwargs(s3, secret_key="not-the-secret"))
    r = run_floe("serve", "--config", server.config_path, cwd=server.workdir, timeout=60)
    assert r.returncode != 0
    err = r.stderr + r.stdout
    assert "catalog.warehouse" in err and WAREHOUSE in err and "cannot be reached" in err, err
    assert "Signature" in err or "403" in err or "PermissionDenied" in err, err
    assert not any(k.startswith("floe/") for k in s3.objects()), "nothing written"


def test_s3_store_restart_and_wrong_keys_mid_ingest(s3, floe_server_factory):
    server = floe_server_factory(**floe_s3_kwargs(s3))
    acked: list[str] = []
    stop = threading.Event()
    errors: list[str] = []

    def client():
        n = 0
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline and n < 400:
            batch = make_events("rs", 10, start=n)
            n += 10
            resp = try_post_events(server.url, batch)
            if isinstance(resp, BaseException):
                errors.append(repr(resp))
            elif resp.status == 200:
                acked.extend(e["id"] for e in batch)
            elif resp.status not in (429, 503):
                errors.append(f"{resp.status} {resp.body[:200]!r}")
            time.sleep(0.05)

    t = threading.Thread(target=client)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 50, 30, "the first acknowledged rows")
        # The store goes away for a few seconds, mid-ingest.
        s3.stop()
        time.sleep(4)
        s3.start()
        wait_until(lambda: len(acked) >= 150, 30, "rows acknowledged after the store came back")
        # Back with keys floe does not have: the sink fails and says so.
        s3.stop()
        s3.start(secret_key="rotated-secret")

        def failing():
            _status, body = healthz(server)
            return [f for f in body.get("failing_sinks", []) if f["sink"] == "events_table"] or None

        [entry] = wait_until(failing, 60, "/healthz to name the failing sink")
        assert "Signature" in entry["error"] or "403" in entry["error"] or "ermission" in entry["error"], entry
        # And back with the right keys.
        s3.stop()
        s3.start()
    finally:
        stop.set()
        t.join(timeout=90)
    assert not errors, errors[:5]
    table = wait_for_ids(server, acked, timeout=90, settle=3.0)
    counts = {}
    for i in table.column("id").to_pylist():
        counts[i] = counts.get(i, 0) + 1
    dupes = [i for i, c in counts.items() if c > 1]
    assert not dupes, dupes[:5]
    assert set(acked) <= set(counts)
    # The failure cleared once the store took the keys again.
    wait_until(lambda: not healthz(server)[1].get("failing_sinks"), 60, "the sink to recover")
    assert read_table(server).num_rows == len(counts)
