"""Stream schemas, dead letters and SQL validation, end to end (docs/sql.md).

- Dead letters: a mixed batch lands its valid rows in the table and its invalid rows (raw JSON,
  row, field, error) in `<namespace>.<stream>_dead_letter`, both read back with PyIceberg; the
  answer's counts match; a kill -9 and restart duplicates nothing.
- Every field type round-trips through the log, the pipeline and Parquet: PyIceberg reads the
  values that were sent.
- `unknown_fields = "drop"`, unstructured streams (one `value` json column).
- `floe pipelines validate` (offline CLI) and `POST /v1/validate_sql` (200 with schemas, 400 with
  the error in the shape of docs/sql.md, "Validation", and its position).
"""

from __future__ import annotations

import base64
import datetime as dt
import json

from floe_e2e.config import LOOPBACK
from floe_e2e.http import http_request, post_events
from floe_e2e.server import free_port, run_floe
from floe_e2e.tables import read_table, wait_for_rows

UTC = dt.timezone.utc


def _config(port: int) -> str:
    return f"""\
[server]
listen = "{LOOPBACK}:{port}"
data_dir = "floe-data"

[catalog]
name = "floe"
warehouse = "floe-data/warehouse"

[[streams]]
name = "orders"
fields = [
  {{ name = "id", type = "int64", required = true }},
  {{ name = "amount", type = "float64", required = true }},
  {{ name = "note", type = "string" }},
]
on_invalid = "dead_letter"

[[sinks]]
name = "orders_table"
type = "iceberg"
table = "shop.orders"
rolling = {{ interval_seconds = 1 }}

[[pipelines]]
name = "orders_copy"
sql = "INSERT INTO orders_table SELECT * FROM orders"

[[streams]]
name = "typed"
fields = [
  {{ name = "s", type = "string", required = true }},
  {{ name = "i32", type = "int32" }},
  {{ name = "i64", type = "int64" }},
  {{ name = "f32", type = "float32" }},
  {{ name = "f64", type = "float64" }},
  {{ name = "b", type = "bool" }},
  {{ name = "ts", type = "timestamp" }},
  {{ name = "bin", type = "binary" }},
  {{ name = "j", type = "json" }},
  {{ name = "l", type = "list", items = {{ type = "int64" }} }},
  {{ name = "st", type = "struct", fields = [
      {{ name = "name", type = "string", required = true }},
      {{ name = "tags", type = "list", items = {{ type = "string" }} }},
      {{ name = "inner", type = "struct", fields = [ {{ name = "v", type = "float64" }} ] }},
  ] }},
]

[[sinks]]
name = "typed_table"
type = "iceberg"
table = "shop.typed"
rolling = {{ interval_seconds = 1 }}

[[pipelines]]
name = "typed_copy"
sql = "INSERT INTO typed_table SELECT * FROM typed"

[[streams]]
name = "loose"
fields = [ {{ name = "id", type = "int64", required = true }}, {{ name = "name", type = "string" }} ]
unknown_fields = "drop"

[[streams]]
name = "raw"

[[sinks]]
name = "loose_table"
type = "iceberg"
table = "shop.loose"
rolling = {{ interval_seconds = 1 }}

[[sinks]]
name = "raw_table"
type = "iceberg"
table = "shop.raw"
rolling = {{ interval_seconds = 1 }}

[[pipelines]]
name = "loose_and_raw"
sql = "INSERT INTO loose_table SELECT * FROM loose; INSERT INTO raw_table SELECT value, value->>'kind' AS kind FROM raw"
"""


def _server(factory):
    port = free_port()
    return factory(config_text=_config(port), port=port)


def test_dead_letters_land_exactly_once(floe_server_factory):
    server = _server(floe_server_factory)
    body = "\n".join(
        [
            json.dumps({"id": 1, "amount": 9.5}),
            json.dumps({"id": "two", "amount": 1}),
            json.dumps({"id": 3, "amount": 2.5, "note": "ok"}),
            json.dumps({"id": 4}),
            "not json",
        ]
    ).encode()
    resp = post_events(server.url, body=body, stream="orders", content_type="application/x-ndjson")
    assert resp.status == 200, resp.body
    answer = resp.json()
    assert answer["accepted"] == 2 and answer["dead_lettered"] == 3, answer
    assert [(e["row"], e["field"]) for e in answer["errors"]] == [(1, "id"), (3, "amount"), (4, "")], answer
    assert "expected int64, found string" in answer["errors"][0]["message"]

    rows = wait_for_rows(server, 2, table="shop.orders")
    assert sorted(rows.column("id").to_pylist()) == [1, 3]
    letters = wait_for_rows(server, 3, table="shop.orders_dead_letter")
    got = sorted(zip(letters.column("row").to_pylist(), letters.column("field").to_pylist(),
                     letters.column("raw").to_pylist(), letters.column("stream").to_pylist()))
    assert got == [
        (1, "id", '{"id": "two", "amount": 1}', "orders"),
        (3, "amount", '{"id": 4}', "orders"),
        (4, None, "not json", "orders"),
    ]
    errors = dict(zip(letters.column("row").to_pylist(), letters.column("error").to_pylist()))
    assert "required field is missing" in errors[3]
    for t in letters.column("received_at").to_pylist():
        assert abs((dt.datetime.now(UTC) - t).total_seconds()) < 300

    # A second batch, then kill -9 and restart: nothing is written twice.
    resp = post_events(server.url, [{"id": 5, "amount": 1.0}, {"id": 6, "amount": "x"}], stream="orders")
    assert resp.status == 200 and resp.json()["dead_lettered"] == 1, resp.body
    wait_for_rows(server, 3, table="shop.orders")
    wait_for_rows(server, 4, table="shop.orders_dead_letter")
    server.kill9()
    server.start()
    resp = post_events(server.url, [{"id": 7, "amount": 2.0}, {"amount": 1}], stream="orders")
    assert resp.status == 200 and resp.json() == {**resp.json(), "accepted": 1, "dead_lettered": 1}
    rows = wait_for_rows(server, 4, table="shop.orders", settle=2.5)
    letters = wait_for_rows(server, 5, table="shop.orders_dead_letter", settle=0.5)
    assert sorted(rows.column("id").to_pylist()) == [1, 3, 5, 7]
    assert letters.num_rows == 5

    # Idempotency keys cover dead letters: a keyed request whose rows are all invalid, and a mixed
    # one, replayed after a kill -9 store nothing new and answer the same counts.
    all_bad = post_events(server.url, [{"id": "k"}], stream="orders", headers={"Idempotency-Key": "all-bad"})
    mixed = post_events(server.url, [{"id": 8, "amount": 1.0}, {"id": None}], stream="orders",
                        headers={"Idempotency-Key": "mixed"})
    assert all_bad.status == 200 and all_bad.json()["accepted"] == 0 and all_bad.json()["dead_lettered"] == 1
    assert mixed.status == 200 and mixed.json()["accepted"] == 1 and mixed.json()["dead_lettered"] == 1
    server.kill9()
    server.start()
    for key, rows_, accepted in (("all-bad", [{"id": "k"}], 0), ("mixed", [{"id": 8, "amount": 1.0}, {"id": None}], 1)):
        again = post_events(server.url, rows_, stream="orders", headers={"Idempotency-Key": key})
        assert again.status == 200, again.body
        assert again.header("Idempotent-Replayed") == "true", (key, again.headers)
        assert (again.json()["accepted"], again.json()["dead_lettered"]) == (accepted, 1), again.json()
    rows = wait_for_rows(server, 5, table="shop.orders", settle=2.5)
    letters = wait_for_rows(server, 7, table="shop.orders_dead_letter", settle=0.5)
    assert sorted(rows.column("id").to_pylist()) == [1, 3, 5, 7, 8]
    assert letters.num_rows == 7


def test_every_type_round_trips_through_parquet(floe_server_factory):
    server = _server(floe_server_factory)
    sent = [
        {
            "s": "full", "i32": -2147483648, "i64": 9007199254740993, "f32": 1.5, "f64": -0.1,
            "b": True, "ts": "2026-05-06T07:08:09.123456+02:00", "bin": base64.b64encode(b"\x00\xffhi").decode(),
            "j": {"a": [1, None, "x"], "b": {"c": True}}, "l": [1, -2, 3],
            "st": {"name": "n", "tags": ["p", "q"], "inner": {"v": 2.5}},
        },
        {"s": "millis", "ts": 1767225600123, "j": "text", "l": [], "st": {"name": "m", "tags": None, "inner": None}},
        {"s": "micros", "ts": 1767225600123456, "j": 42, "i32": 7},
        {"s": "nulls", "i32": None, "i64": None, "f32": None, "f64": None, "b": None, "ts": None, "bin": None,
         "j": None, "l": None, "st": None},
    ]
    resp = post_events(server.url, sent, stream="typed")
    assert resp.status == 200 and resp.json()["accepted"] == 4, resp.body
    table = wait_for_rows(server, 4, table="shop.typed")
    rows = {r["s"]: r for r in table.to_pylist()}
    full = rows["full"]
    assert (full["i32"], full["i64"], full["f32"], full["f64"], full["b"]) == (-2147483648, 9007199254740993, 1.5, -0.1, True)
    assert full["ts"] == dt.datetime(2026, 5, 6, 5, 8, 9, 123456, tzinfo=UTC)
    assert full["bin"] == b"\x00\xffhi"
    assert json.loads(full["j"]) == sent[0]["j"]
    assert full["l"] == [1, -2, 3]
    assert full["st"] == {"name": "n", "tags": ["p", "q"], "inner": {"v": 2.5}}
    assert rows["millis"]["ts"] == dt.datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert rows["millis"]["j"] == '"text"' and rows["millis"]["l"] == []
    assert rows["millis"]["st"] == {"name": "m", "tags": None, "inner": None}
    assert rows["micros"]["ts"] == dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert rows["micros"]["j"] == "42" and rows["micros"]["i32"] == 7
    assert all(v is None for k, v in rows["nulls"].items() if k != "s")

    schema = read_table(server, "shop.typed").schema
    types = {f.name: str(f.type) for f in schema}
    assert types["i32"] == "int32" and types["f32"] == "float" and types["ts"].startswith("timestamp[us")
    assert types["j"] in ("string", "large_string"), types


def test_unknown_fields_drop_and_unstructured_stream(floe_server_factory):
    server = _server(floe_server_factory)
    resp = post_events(server.url, [{"id": 1, "name": "a", "extra": {"x": 1}}, {"id": 2, "zzz": None}], stream="loose")
    assert resp.status == 200 and resp.json()["accepted"] == 2, resp.body
    resp = post_events(server.url, [{"id": "1", "other": 1}], stream="loose")
    assert resp.status == 400 and resp.json()["rows"][0]["field"] == "id", resp.body
    loose = wait_for_rows(server, 2, table="shop.loose")
    assert sorted(loose.to_pylist(), key=lambda r: r["id"]) == [{"id": 1, "name": "a"}, {"id": 2, "name": None}]

    events = [{"kind": "click", "n": [1, 2]}, "plain", 7, [1, {"a": None}]]
    resp = post_events(server.url, events, stream="raw")
    assert resp.status == 200 and resp.json()["accepted"] == 4, resp.body
    raw = wait_for_rows(server, 4, table="shop.raw")
    assert sorted(json.dumps(json.loads(v), sort_keys=True) for v in raw.column("value").to_pylist()) == sorted(
        json.dumps(e, sort_keys=True) for e in events
    )
    assert sorted(k for k in raw.column("kind").to_pylist() if k) == ["click"]


def test_validate_sql_cli_and_http(floe_server_factory, tmp_path):
    port = free_port()
    config = tmp_path / "offline.toml"
    config.write_text(_config(port))
    ok = run_floe("pipelines", "validate", "--config", str(config), "--json", "--sql",
                  "INSERT INTO orders_table SELECT id, upper(note) AS note, amount * 2 AS double_amount FROM orders")
    assert ok.returncode == 0, ok.stderr
    answer = json.loads(ok.stdout)
    cols = answer["statements"][0]["columns"]
    assert answer["statements"][0]["table"] == "shop.orders"
    assert [(c["name"], c["type"], c["required"]) for c in cols] == [
        ("id", "long", True), ("note", "string", False), ("double_amount", "double", True)]
    human = run_floe("pipelines", "validate", "--config", str(config), "--sql",
                     "INSERT INTO raw_table SELECT value->>'a' AS a FROM raw")
    assert human.returncode == 0 and "INSERT INTO raw_table" in human.stdout, human
    bad = run_floe("pipelines", "validate", "--config", str(config), "--json", "--sql",
                   "INSERT INTO orders_table\nSELECT id, count(*) AS n FROM orders GROUP BY id")
    assert bad.returncode == 1
    err = json.loads(bad.stdout)["error"]
    assert err["code"] == "invalid_sql" and "aggregations" in err["message"], err
    syntax = run_floe("pipelines", "validate", "--config", str(config), "--sql", "INSERT INTO orders_table SELEC id FROM orders")
    assert syntax.returncode == 1 and "Line: 1" in syntax.stderr, syntax.stderr

    server = floe_server_factory(config_text=_config(port), port=port)
    url = f"{server.url}/v1/validate_sql"
    headers = {"Content-Type": "application/json"}
    resp = http_request("POST", url, json.dumps({"sql": "INSERT INTO typed_table SELECT s, l[1] AS first FROM typed"}).encode(), headers)
    assert resp.status == 200, resp.body
    assert [c["name"] for c in resp.json()["statements"][0]["columns"]] == ["s", "first"]
    resp = http_request("POST", url, json.dumps({"sql": "INSERT INTO typed_table SELECT nope FROM typed"}).encode(), headers)
    assert resp.status == 400, resp.body
    e = resp.json()["error"]
    assert e["code"] == "invalid_sql" and "nope" in e["message"] and (e["line"], e["column"]) == (1, 32), e
    resp = http_request("POST", url, b"{}", headers)
    assert resp.status == 400 and resp.json()["error"]["code"] == "bad_request"
