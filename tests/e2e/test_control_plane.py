"""The control plane on the real binary (docs/control-plane.md): streams, sinks and pipelines
created through the HTTP API on a floe started with none, their rows read back with PyIceberg,
restarts (graceful and `kill -9`) that keep the objects and the data, and a pipeline changed to a
new version under continuous load from four clients, with a `kill -9` during the switch: every
acknowledged row lands exactly once, shaped by version 1 before the switch and by version 2
after it.
"""

import json
import threading
import time

from floe_e2e.config import settings_toml
from floe_e2e.http import http_request
from floe_e2e.server import free_port
from floe_e2e.tables import read_table, wait_for_rows

TABLE = "analytics.cp"
#: Extra wait after the expected count is reached, to catch rows committed twice.
SETTLE = 3.0


def _api(server, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data else {}
    r = http_request(method, f"{server.url}{path}", data, headers)
    return r.status, (r.json() if r.body else None)


def _create_all(server, sql: str):
    schema = {"fields": [{"name": "id", "type": "string", "required": True},
                         {"name": "n", "type": "int64", "unit": "millisecond"}]}
    for path, body in [
        ("/v1/streams", {"name": "cp", "schema": schema}),
        ("/v1/sinks", {"name": "cp_table", "type": "iceberg", "table": TABLE, "rolling": {"interval_seconds": 1}}),
        ("/v1/pipelines", {"name": "cp_pipe", "sql": sql, "start": "earliest"}),
    ]:
        status, answer = _api(server, "POST", path, body)
        assert status == 201, (path, status, answer)
        assert answer["origin"] == "api", answer


def _send(server, ids, key: str | None = None) -> int:
    rows = [{"id": i, "n": k} for k, i in enumerate(ids)]
    headers = {"content-type": "application/json"}
    if key:
        headers["idempotency-key"] = key
    r = http_request("POST", f"{server.url}/v1/streams/cp/events", json.dumps(rows).encode(), headers)
    return r.status


def _table_ids(table) -> list[str]:
    return table.column("id").to_pylist()


def test_objects_made_through_the_api_run_and_survive_restarts(floe_server_factory):
    port = free_port()
    server = floe_server_factory(config_text=settings_toml(port), port=port)
    status, answer = _api(server, "GET", "/v1/pipelines")
    assert (status, answer) == (200, {"pipelines": []})
    _create_all(server, "INSERT INTO cp_table SELECT id, n FROM cp")

    ids = [f"a{i}" for i in range(50)]
    assert _send(server, ids) == 200
    table = wait_for_rows(server, len(ids), table=TABLE)
    assert sorted(_table_ids(table)) == sorted(ids)

    server.restart()
    for kind, name in [("streams", "cp"), ("sinks", "cp_table"), ("pipelines", "cp_pipe")]:
        status, answer = _api(server, "GET", f"/v1/{kind}/{name}")
        assert status == 200 and answer["origin"] == "api", (kind, status, answer)
    more = [f"b{i}" for i in range(30)]
    assert _send(server, more) == 200
    server.kill9()
    server.start()
    table = wait_for_rows(server, len(ids) + len(more), table=TABLE, settle=SETTLE)
    assert sorted(_table_ids(table)) == sorted(ids + more), "every acknowledged row exactly once"

    # Deleting the sink keeps its table unless asked.
    assert _api(server, "DELETE", "/v1/pipelines/cp_pipe")[0] == 200
    assert _api(server, "DELETE", "/v1/sinks/cp_table")[0] == 200
    assert read_table(server, TABLE).num_rows == len(ids) + len(more)
    server.restart()
    assert _api(server, "GET", "/v1/pipelines/cp_pipe")[0] == 404
    assert _api(server, "GET", "/v1/streams/cp")[0] == 200


class _Client(threading.Thread):
    """Sends rows `c<k>-<seq>` in small batches until stopped; remembers what was acknowledged.

    A batch is retried with the same `Idempotency-Key` until it is acknowledged, so a batch that
    became durable just before a kill (its 200 lost) is answered from the key store, not stored
    twice."""

    def __init__(self, server, k: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.server, self.k, self.stop = server, k, stop
        self.acked: list[str] = []
        self.seq = 0

    def run(self):
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            batch = [f"c{self.k}-{self.seq + j:06d}" for j in range(10)]
            try:
                status = _send(self.server, batch, key=f"c{self.k}-{self.seq}")
            except OSError:  # the server is down (killed) for a moment
                status = None
            if status == 200:
                self.acked += batch
                self.seq += 10
            else:
                time.sleep(0.05)


def test_a_pipeline_changes_version_under_load_and_a_kill_during_the_switch_changes_nothing(floe_server_factory):
    port = free_port()
    server = floe_server_factory(config_text=settings_toml(port), port=port)
    _create_all(server, "INSERT INTO cp_table SELECT id, 'v1' AS shape FROM cp")
    stop = threading.Event()
    clients = [_Client(server, k, stop) for k in range(4)]
    for c in clients:
        c.start()
    time.sleep(2.0)

    v2 = {"sql": "INSERT INTO cp_table SELECT id, 'v2' AS shape FROM cp"}
    patch = threading.Thread(target=lambda: _try_patch(server, v2), daemon=True)
    patch.start()
    time.sleep(0.05)
    server.kill9()  # during the switch (or just before or after it)
    patch.join(timeout=30)
    server.start()
    status, answer = _api(server, "GET", "/v1/pipelines/cp_pipe")
    assert status == 200, answer
    if answer["version"] == 1:  # the kill came before the change was stored
        status, answer = _api(server, "PATCH", "/v1/pipelines/cp_pipe", v2)
        assert status == 200, answer
    assert answer["version"] == 2, answer
    time.sleep(2.0)
    stop.set()
    for c in clients:
        c.join(timeout=30)

    acked = [i for c in clients for i in c.acked]
    assert len(acked) > 100, "the load ran"
    table = wait_for_rows(server, len(acked), table=TABLE, settle=SETTLE)
    got = _table_ids(table)
    assert len(got) == len(set(got)), "no row twice"
    assert set(got) == set(acked), "every acknowledged row, nothing else"

    shapes = dict(zip(got, table.column("shape").to_pylist()))
    for c in clients:
        seen = [shapes[i] for i in c.acked]  # in the order the client sent them
        assert seen == sorted(seen), f"client {c.k}: a v1 row after a v2 row"
    assert "v2" in shapes.values() and "v1" in shapes.values()

    status, history = _api(server, "GET", "/v1/pipelines/cp_pipe/versions")
    assert status == 200
    v = history["versions"]
    assert [x["version"] for x in v] == [1, 2], history
    assert v[0]["end_offsets"] == v[1]["start_offsets"], history
    switch = v[1]["start_offsets"]["cp_table"]
    assert sum(1 for s in shapes.values() if s == "v1") == switch, "rows below the switch offset are v1's"


def _try_patch(server, body):
    try:
        _api(server, "PATCH", "/v1/pipelines/cp_pipe", body)
    except OSError:
        pass  # killed while answering


def test_a_stream_gains_a_field_under_load_and_pyiceberg_reads_old_and_new_rows(floe_server_factory):
    """Schema evolution (docs/control-plane.md): a new optional field and a widened one, while two
    clients send; old rows read the new column as null; a refused change leaves all as it was."""
    port = free_port()
    server = floe_server_factory(config_text=settings_toml(port), port=port)
    fields = [{"name": "id", "type": "string", "required": True}, {"name": "n", "type": "int32"}]
    for path, body in [
        ("/v1/streams", {"name": "cp", "fields": fields}),
        ("/v1/sinks", {"name": "cp_table", "type": "iceberg", "table": TABLE, "rolling": {"interval_seconds": 1}}),
        ("/v1/pipelines", {"name": "cp_pipe", "sql": "INSERT INTO cp_table SELECT * FROM cp", "start": "earliest"}),
    ]:
        status, answer = _api(server, "POST", path, body)
        assert status == 201, (path, answer)

    evolved = threading.Event()
    stop = threading.Event()
    acked: list[list[str]] = [[], []]

    def client(k: int):
        seq = 0
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            new = evolved.is_set()
            ids = [f"e{k}-{seq + j:05d}" for j in range(10)]
            rows = [{"id": i, "n": 3_000_000_000 if new else 7, **({"tag": "t"} if new else {})} for i in ids]
            r = http_request("POST", f"{server.url}/v1/streams/cp/events", json.dumps(rows).encode(),
                             {"content-type": "application/json", "idempotency-key": f"e{k}-{seq}"})
            assert r.status == 200, r.body
            acked[k] += ids
            seq += 10

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.5)

    # Refused: removing a field; nothing changes (same version, same table schema).
    status, before = _api(server, "GET", "/v1/streams/cp")
    status, answer = _api(server, "PATCH", "/v1/streams/cp", {"fields": fields[:1]})
    assert (status, answer["error"]["code"]) == (400, "invalid_config"), answer
    assert "cannot be removed" in answer["error"]["message"]
    assert _api(server, "GET", "/v1/streams/cp")[1]["version"] == before["version"]

    new_fields = [fields[0], {"name": "n", "type": "int64"}, {"name": "tag", "type": "string"}]
    status, answer = _api(server, "PATCH", "/v1/streams/cp", {"fields": new_fields})
    assert status == 200, answer
    evolved.set()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)

    everyone = acked[0] + acked[1]
    table = wait_for_rows(server, len(everyone), table=TABLE, settle=SETTLE)
    assert sorted(table.column("id").to_pylist()) == sorted(everyone), "every acknowledged row exactly once"
    from floe_e2e.tables import load_table
    schema = load_table(server, TABLE).schema()
    assert [f.name for f in schema.fields] == ["id", "n", "tag"], schema
    assert str(schema.find_field("n").field_type) == "long"
    rows = {r["id"]: r for r in table.to_pylist()}
    old = [r for r in rows.values() if r["tag"] is None]
    new = [r for r in rows.values() if r["tag"] == "t"]
    assert old and new and len(old) + len(new) == len(rows)
    assert all(r["n"] == 7 for r in old) and all(r["n"] == 3_000_000_000 for r in new)
