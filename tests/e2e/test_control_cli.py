"""The control plane from the command line (docs/cli.md, "floe streams|sinks|pipelines"; the
routes are docs/control-plane.md): on a floe started with no streams, sinks or pipelines,
`floe streams create` with a schema file in the managed product's format, `floe sinks create`,
`floe pipelines create`, rows sent with `floe send` and read back with PyIceberg, the pipeline's
status and versions with `--json`, the human tables, and the exit codes: 1 for what the server
refuses (with its code on stderr), 2 for usage, 3 for a server that cannot be reached.
"""

from __future__ import annotations

import json

from floe_e2e.config import LOOPBACK, settings_toml
from floe_e2e.server import free_port, run_floe, wait_until
from floe_e2e.tables import ids_exactly_once, wait_for_rows

TABLE = "analytics.clicks"

#: A schema file as the managed product writes it: `unit` is accepted (docs/control-plane.md).
SCHEMA = {"fields": [
    {"name": "id", "type": "string", "required": True},
    {"name": "n", "type": "int64"},
    {"name": "ts", "type": "timestamp", "unit": "millisecond", "required": True},
    {"name": "tags", "type": "list", "items": {"type": "string"}},
]}

SQL_V1 = "INSERT INTO clicks_table SELECT id, n, ts, 'v1' AS shape FROM clicks"
SQL_V2 = "INSERT INTO clicks_table SELECT id, n, ts, 'v2' AS shape FROM clicks"


def _bare_server(factory):
    port = free_port()
    return factory(config_text=settings_toml(port), port=port)


def _floe(server, *args, input: bytes | None = None):
    """`floe ARGS --url <server>`; the completed process (never raises on a non-zero exit)."""
    return run_floe(*args, "--url", server.url, cwd=server.workdir, input=input)


def _ok(result) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result.stdout


def _json(result):
    return json.loads(_ok(result))


def _refused(result, code: str) -> None:
    """Exit 1 with the server's `code` on stderr."""
    assert result.returncode == 1, (
        f"{result.args}: want exit 1 (refused), got {result.returncode}\n{result.stdout}\n{result.stderr}")
    assert code in result.stderr, f"{result.args}: code {code!r} not on stderr: {result.stderr!r}"


def _rows(prefix: str, n: int, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        row = {"id": f"{prefix}-{i:04d}", "n": i, "ts": 1740816000000 + i * 1000, "tags": ["a", str(i % 3)]}
        if i % 5 == 0:
            row["extra"] = "dropped by unknown_fields = drop"
        rows.append(row)
    return rows


def _write_ndjson(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _key_values(stdout: str) -> dict[str, str]:
    """The `key: value` lines of a `get`."""
    pairs = (line.split(":", 1) for line in stdout.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _table_line(stdout: str, name: str) -> list[str]:
    """The cells of the table row whose first cell is `name`."""
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{stdout}")


def test_streams_sinks_and_pipelines_made_and_changed_from_the_cli(floe_server_factory, tmp_path):
    server = _bare_server(floe_server_factory)
    for kind in ("streams", "sinks", "pipelines"):
        assert _json(_floe(server, kind, "list", "--json")) == {kind: []}

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    out = _ok(_floe(server, "streams", "create", "clicks", "--schema", schema, "--unknown-fields", "drop"))
    assert "clicks" in out and "1" in out, out
    stream = _json(_floe(server, "streams", "get", "clicks", "--json"))
    assert (stream["kind"], stream["name"], stream["origin"], stream["version"]) == ("stream", "clicks", "api", 1)
    assert [f["name"] for f in stream["config"]["fields"]] == ["id", "n", "ts", "tags"]
    assert stream["config"]["unknown_fields"] == "drop"

    sink = _json(_floe(server, "sinks", "create", "clicks_table", "--type", "iceberg", "--table", TABLE,
                       "--partition-by", "day(ts)", "--roll-interval", "1", "--json"))
    assert (sink["kind"], sink["config"]["table"], sink["config"]["rolling"]["interval_seconds"]) == \
        ("sink", TABLE, 1)
    assert sink["config"]["partition_by"] == ["day(ts)"]

    _ok(_floe(server, "pipelines", "create", "clicks_pipe", "--sql", SQL_V1, "--start", "earliest"))

    first = _rows("c", 30)
    rows_file = tmp_path / "rows.ndjson"
    _write_ndjson(rows_file, first)
    out = _ok(_floe(server, "send", "clicks", rows_file))
    assert "accepted 30 rows" in out, out

    table = wait_for_rows(server, 30, table=TABLE, settle=1.0)
    ids_exactly_once(table, [r["id"] for r in first])
    assert set(table.column("shape").to_pylist()) == {"v1"}

    def committed_30():
        p = _json(_floe(server, "pipelines", "get", "clicks_pipe", "--json"))
        statements = p["status"]["statements"]
        return p if statements and statements[0]["committed_offset"] == 30 else None

    pipe = wait_until(committed_30, 60, "clicks_pipe committed offset 30")
    assert pipe["status"]["state"] == "running", pipe
    statement = pipe["status"]["statements"][0]
    assert (statement["sink"], statement["stream"], statement["state"]) == ("clicks_table", "clicks", "running")
    assert statement["lag_rows"] == 0, statement

    listed = _ok(_floe(server, "pipelines", "list"))
    assert _table_line(listed, "clicks_pipe")[1:] == ["api", "1", "running", "0", "30"], listed
    shown = _key_values(_ok(_floe(server, "pipelines", "get", "clicks_pipe")))
    assert shown["status.state"] == "running" and shown["config.sql"] == SQL_V1, shown
    assert shown["status.statements[0].committed_offset"] == "30", shown

    # A new version from a file; the rows after it are shaped by it.
    sql_file = tmp_path / "v2.sql"
    sql_file.write_text(SQL_V2 + "\n")
    out = _ok(_floe(server, "pipelines", "update", "clicks_pipe", "--sql-file", sql_file))
    assert "version 2" in out, out
    second = _rows("d", 20, start=30)
    _ok(_floe(server, "send", "clicks", "-", input="".join(json.dumps(r) + "\n" for r in second).encode()))
    table = wait_for_rows(server, 50, table=TABLE, settle=1.0)
    ids_exactly_once(table, [r["id"] for r in first + second])
    shapes = dict(zip(table.column("id").to_pylist(), table.column("shape").to_pylist()))
    assert {shapes[r["id"]] for r in first} == {"v1"} and {shapes[r["id"]] for r in second} == {"v2"}, shapes

    history = _json(_floe(server, "pipelines", "history", "clicks_pipe", "--json"))
    assert history["pipeline"] == "clicks_pipe"
    versions = history["versions"]
    assert [v["version"] for v in versions] == [1, 2], history
    assert [v["sql"] for v in versions] == [SQL_V1, SQL_V2], history
    assert versions[0]["end_offsets"] == {"clicks_table": 30} == versions[1]["start_offsets"], history
    assert versions[0]["ended_at"] and versions[1]["ended_at"] is None, history
    out = _ok(_floe(server, "pipelines", "history", "clicks_pipe"))
    assert _table_line(out, "2")[2] == "(current)", out
    assert "'v1'" in _table_line(out, "1") and "'v2'" in _table_line(out, "2"), out

    # Human lists.
    assert _table_line(_ok(_floe(server, "streams", "list")), "clicks")[1:4] == ["api", "1", "4"]
    assert _table_line(_ok(_floe(server, "sinks", "list")), "clicks_table")[1:] == ["api", "1", "iceberg", TABLE]

    # A stream changes its http settings in place; its fields cannot change.
    updated = _json(_floe(server, "streams", "update", "clicks", "--cors-origin", "http://localhost:3000",
                          "--auth", "false", "--json"))
    assert updated["version"] == 2 and updated["config"]["http"]["cors_origins"] == ["http://localhost:3000"]
    r = _floe(server, "streams", "update", "clicks", "--set", "on_invalid=dead_letter")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)

    # What a pipeline reads or writes cannot be deleted; then in order it can.
    _refused(_floe(server, "streams", "delete", "clicks"), "in_use")
    _refused(_floe(server, "sinks", "delete", "clicks_table"), "in_use")
    assert "deleted pipeline clicks_pipe" in _ok(_floe(server, "pipelines", "delete", "clicks_pipe"))
    _refused(_floe(server, "pipelines", "get", "clicks_pipe"), "not_found")
    assert _json(_floe(server, "sinks", "delete", "clicks_table", "--json")) == \
        {"deleted": {"kind": "sink", "name": "clicks_table"}}
    _ok(_floe(server, "streams", "delete", "clicks"))
    assert _json(_floe(server, "streams", "list", "--json")) == {"streams": []}
    # The table stays (no --purge).
    assert wait_for_rows(server, 50, table=TABLE).num_rows == 50


def test_refusals_exit_1_with_the_servers_code(floe_server, tmp_path, monkeypatch):
    # The standard config declares stream `events`, sink `events_table`, pipeline `events_to_table`.
    listed = _json(_floe(floe_server, "streams", "list", "--json"))
    events = [s for s in listed["streams"] if s["name"] == "events"]
    assert events and events[0]["origin"] == "config" and events[0]["created_at"] is None, listed

    _refused(_floe(floe_server, "streams", "delete", "events", "--force"), "declared_in_config")
    _refused(_floe(floe_server, "pipelines", "update", "events_to_table", "--sql",
                   "INSERT INTO events_table SELECT * FROM events"), "declared_in_config")
    _refused(_floe(floe_server, "sinks", "create", "events_table", "--type", "iceberg", "--table", "a.b"),
             "already_exists")
    _refused(_floe(floe_server, "pipelines", "create", "bad", "--sql", "INSERT INTO nowhere SELECT * FROM events"),
             "invalid_config")
    _refused(_floe(floe_server, "sinks", "get", "nope"), "not_found")
    r = _floe(floe_server, "pipelines", "get", "nope", "--json")
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)

    # FLOE_URL instead of --url.
    monkeypatch.setenv("FLOE_URL", floe_server.url)
    r = run_floe("pipelines", "list", "--json", cwd=tmp_path)
    names = [p["name"] for p in json.loads(_ok(r))["pipelines"]]
    assert "events_to_table" in names, names


def test_usage_errors_exit_2(floe_bin, tmp_path):
    url = f"http://{LOOPBACK}:{free_port()}"
    for args in [
        ("pipelines", "create", "p"),  # neither --sql nor --sql-file
        ("pipelines", "create", "p", "--sql", "x", "--sql-file", "f.sql"),
        ("sinks", "create", "t", "--type", "delta"),
        ("streams", "create", "s", "--schema", str(tmp_path / "missing.json")),
        ("streams", "update", "s"),  # nothing to change
        ("streams", "list", "--url", "https://example.com"),
    ]:
        r = run_floe(*args, *([] if "--url" in args else ["--url", url]), cwd=tmp_path)
        assert r.returncode == 2, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"


def test_an_unreachable_server_exits_3(floe_bin, tmp_path):
    url = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    rows = tmp_path / "rows.ndjson"
    _write_ndjson(rows, _rows("u", 3))
    for args in [
        ("streams", "list"),
        ("sinks", "get", "t"),
        ("pipelines", "create", "p", "--sql", SQL_V1),
        ("pipelines", "history", "p", "--json"),
        ("send", "clicks", str(rows)),
        ("get", "analytics.events", "id=x"),
    ]:
        r = run_floe(*args, "--url", url, cwd=tmp_path)
        assert r.returncode == 3, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        assert "unreachable" in r.stderr, f"{args}: {r.stderr!r}"


def test_tokens_made_listed_and_revoked_from_the_cli(floe_server_factory):
    """`floe tokens create|list|revoke` (docs/security.md, "Tokens created at run time"): the token
    is printed once, the listing never shows its secret, a revoked token is refused at once."""
    server = _bare_server(floe_server_factory)
    root = _ok(_floe(server, "tokens", "create", "--scope", "admin", "--description", "ops")).strip()
    assert root.startswith("floe_"), root
    # Auth is on now: without the token the control plane refuses (exit 1, unauthorized).
    _refused(_floe(server, "streams", "list"), "unauthorized")
    web = _json(_floe(server, "tokens", "create", "--scope", "send:*", "--json", "--token", root))
    listing = _ok(_floe(server, "tokens", "list", "--token", root))
    secret = web["token"].rsplit("_", 1)[1]
    assert secret not in listing and root.rsplit("_", 1)[1] not in listing, listing
    assert web["id"] in listing and "ops" in listing
    _refused(_floe(server, "streams", "list", "--token", web["token"]), "forbidden")
    _ok(_floe(server, "tokens", "revoke", web["id"], "--token", root))
    _refused(_floe(server, "tokens", "list", "--token", web["token"]), "unauthorized")
    _refused(_floe(server, "tokens", "revoke", web["id"], "--token", root), "not_found")
    _refused(_floe(server, "tokens", "create", "--scope", "reed", "--token", root), "invalid_config")
