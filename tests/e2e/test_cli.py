"""The CLI against a running server: `floe sql` (docs/query.md, "SQL") and `floe send` (README.md,
"Quickstart")."""

import collections
import json
import re

import pytest

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, encode_rows
from floe_e2e.server import run_floe
from floe_e2e.tables import ids_exactly_once, read_table, wait_for_rows


def _json_rows(stdout: str) -> list[dict]:
    """Rows from `--format json`: a JSON array of objects, {"rows": [...]}, or one object a line."""
    text = stdout.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(value, dict) and isinstance(value.get("rows"), list):
        value = value["rows"]
    assert isinstance(value, list) and all(isinstance(r, dict) for r in value), f"not JSON rows: {stdout!r}"
    return value


def _mentions_number(text: str, n: int) -> bool:
    return re.search(rf"(?<![\d.]){n}(?![\d.])", text) is not None


def test_sql_json_matches_pyiceberg(floe_server):
    events = make_events("cli-sql", 23, namespaces=["app.web", "app.api", "billing", "ops"])
    events.append({"ns": "drop.me", "type": "click", "id": "cli-sql-drop", "ts": 1740816000000})
    assert_accepted(floe_server.post_events(events), len(events))
    table = wait_for_rows(floe_server, 23, settle=1.0)
    want = sorted(collections.Counter(table.column("ns").to_pylist()).items())

    result = run_floe(
        "sql", "SELECT ns, count(*) AS n FROM analytics.events GROUP BY ns ORDER BY ns",
        "--config", floe_server.config_path, "--format", "json",
        cwd=floe_server.workdir,
    )
    assert result.returncode == 0, f"floe sql failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    rows = _json_rows(result.stdout)
    assert [(r["ns"], int(r["n"])) for r in rows] == want, f"floe sql: {rows}; PyIceberg: {want}"


def test_send_ndjson_file(floe_server, tmp_path):
    events = make_events("cli-send", 25)
    path = tmp_path / "events.ndjson"
    path.write_bytes(encode_rows(events, "ndjson"))
    result = run_floe("send", "events", path, "--url", floe_server.url, cwd=tmp_path)
    assert result.returncode == 0, f"floe send failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    assert _mentions_number(result.stdout, 25), f"accepted count 25 not in stdout: {result.stdout!r}"
    table = wait_for_rows(floe_server, 25, settle=1.0)
    ids_exactly_once(table, [e["id"] for e in events])


def test_send_json_array_file_and_stdin(floe_server, tmp_path):
    array_events = make_events("cli-arr", 12)
    path = tmp_path / "events.json"
    path.write_bytes(encode_rows(array_events, "json"))
    result = run_floe("send", "events", path, "--url", floe_server.url, cwd=tmp_path)
    assert result.returncode == 0, f"floe send failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    assert _mentions_number(result.stdout, 12), f"accepted count 12 not in stdout: {result.stdout!r}"

    stdin_events = make_events("cli-stdin", 7)
    result = run_floe("send", "events", "-", "--url", floe_server.url, cwd=tmp_path,
                      input=encode_rows(stdin_events, "ndjson"))
    assert result.returncode == 0, f"floe send - failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    assert _mentions_number(result.stdout, 7), f"accepted count 7 not in stdout: {result.stdout!r}"

    table = wait_for_rows(floe_server, 19, settle=1.0)
    ids_exactly_once(table, [e["id"] for e in array_events + stdin_events])


def test_send_file_with_a_bad_row(floe_server, tmp_path):
    events = make_events("cli-bad", 5)
    events[3]["seq"] = "x"
    path = tmp_path / "bad.ndjson"
    path.write_bytes(encode_rows(events, "ndjson"))
    result = run_floe("send", "events", path, "--url", floe_server.url, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"floe send exited 0 on a file with a bad row:\n{out}"
    assert "seq" in out, f"the rejected field `seq` is not reported:\n{out}"
    assert re.search(r"reject|invalid|error", out, re.I), f"no rejection reported:\n{out}"
    # the bad row: index 3 in the file (0-based), or line 4
    assert _mentions_number(out, 3) or _mentions_number(out, 4), f"the bad row (3 / line 4) is not named:\n{out}"


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_sql_other_formats(floe_server, fmt):
    events = make_events("cli-fmt", 6, namespaces=["app.web"])
    assert_accepted(floe_server.post_events(events), 6)
    wait_for_rows(floe_server, 6)
    result = run_floe(
        "sql", "SELECT ns, count(*) AS n FROM analytics.events GROUP BY ns ORDER BY ns",
        "--config", floe_server.config_path, "--format", fmt, cwd=floe_server.workdir,
    )
    assert result.returncode == 0, f"floe sql --format {fmt} failed:\n{result.stdout}\n{result.stderr}"
    assert "app.web" in result.stdout and _mentions_number(result.stdout, 6), result.stdout
    assert read_table(floe_server).num_rows == 6
