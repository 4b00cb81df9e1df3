"""`floe setup` (docs/cli.md, "floe setup") driven through a pseudo-terminal, as a user would:
on a floe started with no streams, sinks or pipelines, the walk-through creates a working
stream → sink → pipeline (rows sent to the stream are read back from the Iceberg table with
PyIceberg, partitioned as answered); nothing exists on the server until the summary is
confirmed; an answer that is wrong (a type, SQL that does not plan) is asked again with the
reason; a refusal by the server at creation deletes what the setup had created (exit 1); and
declining the summary creates nothing (exit 0).
"""

from __future__ import annotations

import json

from floe_e2e.config import settings_toml
from floe_e2e.http import http_get, http_request, post_events, assert_accepted
from floe_e2e.server import _child_env, floe_bin_path, free_port
from floe_e2e.tables import ids_exactly_once, load_table, wait_for_rows
from floe_e2e.terminal import Terminal

TABLE = "analytics.setup_clicks"
GOOD_SQL = "INSERT INTO clicks_table SELECT id, n * 2 AS n2, ts FROM clicks"


def _setup(server) -> Terminal:
    return Terminal([str(floe_bin_path()), "setup", "--url", server.url], cwd=server.workdir, env=_child_env())


def _names(server, kind: str) -> list[str]:
    r = http_get(f"{server.url}/v1/{kind}")
    assert r.status == 200, (r.status, r.body)
    return [o["name"] for o in r.json()[kind]]


def _answer(t: Terminal, prompt: str, answer: str) -> None:
    t.expect(prompt)
    t.send_line(answer)


#: The questions of a setup that takes every default: an unstructured stream `events` into the
#: Iceberg table `default.events`.
DEFAULT_PROMPTS = [
    "Stream name [events]: ", "blank to type the fields here: ", "Field 1 name: ",
    "(reject, dead_letter) [reject]: ", "send:events to send (y/N): ", "Sink name [events_table]: ",
    "(iceberg, files) [iceberg]: ", "Table (namespace.table) [default.events]: ", "[none]: ",
    "every N seconds [10]: ", "Pipeline name [events_to_table]: ",
    "SQL (one line) [INSERT INTO events_table SELECT * FROM events]: ",
]


def _every_default(t: Terminal) -> None:
    for prompt in DEFAULT_PROMPTS:
        _answer(t, prompt, "")


def _nothing_on_the_server(server) -> None:
    assert (_names(server, "streams"), _names(server, "sinks"), _names(server, "pipelines")) == ([], [], [])


def test_setup_in_a_terminal_creates_a_working_stream_sink_and_pipeline(floe_server_factory):
    port = free_port()
    server = floe_server_factory(config_text=settings_toml(port), port=port)
    _nothing_on_the_server(server)

    t = _setup(server)
    try:
        _answer(t, "Stream name [events]: ", "clicks")
        _answer(t, "blank to type the fields here: ", "")
        for i, (name, ty, required) in enumerate([("id", "", "y"), ("n", "int64", ""), ("ts", "timestamp", "y")]):
            _answer(t, f"Field {i + 1} name: ", name)
            if name == "n":
                # A type that is not one is asked again.
                _answer(t, "[string]: ", "integer")
                t.expect("! answer one of string")
            _answer(t, "[string]: ", ty)
            _answer(t, "(y/N): ", required)
        _answer(t, "Field 4 name: ", "")
        _answer(t, "(reject, drop) [reject]: ", "")
        _answer(t, "(reject, dead_letter) [reject]: ", "")
        _answer(t, "send:clicks to send (y/N): ", "")
        _answer(t, "Sink name [clicks_table]: ", "")
        _answer(t, "(iceberg, files) [iceberg]: ", "")
        _answer(t, "Table (namespace.table) [default.clicks]: ", TABLE)
        _answer(t, "[day(ts)]: ", "")
        _answer(t, "every N seconds [10]: ", "1")
        _answer(t, "Pipeline name [clicks_to_table]: ", "")
        # SQL that does not plan is asked again, with the reason.
        _answer(t, "SQL (one line) [INSERT INTO clicks_table SELECT * FROM clicks]: ",
                "INSERT INTO clicks_table SELECT id, nope FROM clicks")
        t.expect("! ")
        t.expect("nope")
        _answer(t, "SQL (one line) [INSERT INTO clicks_table SELECT * FROM clicks]: ", GOOD_SQL)
        summary = t.expect("Create them now (Y/n): ")
        assert "partitioned by day(ts)" in summary and "id string required" in summary, summary
        # Nothing is written before the confirmation.
        _nothing_on_the_server(server)
        t.send_line("")
        t.expect("Created stream clicks, sink clicks_table and pipeline clicks_to_table.")
        assert t.wait() == 0, t.transcript
    finally:
        t.close()

    assert _names(server, "streams") == ["clicks"]
    pipeline = http_get(f"{server.url}/v1/pipelines/clicks_to_table").json()
    assert pipeline["origin"] == "api" and pipeline["config"]["sql"] == GOOD_SQL, pipeline

    rows = [{"id": f"s-{i:03d}", "n": i, "ts": 1740816000000 + i * 3_600_000} for i in range(40)]
    assert_accepted(post_events(server.url, rows, stream="clicks"), 40)
    table = wait_for_rows(server, 40, table=TABLE, settle=1.0)
    ids_exactly_once(table, [r["id"] for r in rows])
    assert sorted(table.column("n2").to_pylist()) == [2 * i for i in range(40)]
    spec = load_table(server, TABLE).spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [("ts_day", "day")], spec


def test_setup_lands_whole_or_not_at_all(floe_server_factory):
    port = free_port()
    server = floe_server_factory(config_text=settings_toml(port), port=port)

    # Declined at the summary: nothing is created, exit 0.
    t = _setup(server)
    try:
        _every_default(t)
        summary = t.expect("Create them now (Y/n): ")
        assert "stream   events: unstructured" in summary, summary
        t.send_line("n")
        t.expect("Nothing was created.")
        assert t.wait() == 0, t.transcript
    finally:
        t.close()
    _nothing_on_the_server(server)

    # The server refuses the sink at creation (its name was taken after the questions): the stream
    # the setup had just created is deleted again, exit 1 with the server's code.
    t = _setup(server)
    try:
        _every_default(t)
        t.expect("Create them now (Y/n): ")
        r = http_request("POST", f"{server.url}/v1/sinks", json.dumps(
            {"name": "events_table", "type": "iceberg", "table": "analytics.taken"}).encode(),
            {"Content-Type": "application/json"})
        assert r.status == 201, (r.status, r.body)
        t.send_line("y")
        t.expect("already_exists")
        t.expect("nothing was left behind")
        assert t.wait() == 1, t.transcript
    finally:
        t.close()
    assert (_names(server, "streams"), _names(server, "sinks"), _names(server, "pipelines")) == \
        ([], ["events_table"], [])

    # The input ends before the summary: nothing is created, exit 2.
    t = _setup(server)
    try:
        t.expect("Stream name [events]: ")
        t.send_eof()
        t.expect("nothing was created")
        assert t.wait() == 2, t.transcript
    finally:
        t.close()
    assert _names(server, "streams") == []
