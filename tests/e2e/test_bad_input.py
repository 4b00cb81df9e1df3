"""Rejected requests: the right status and error body, and nothing of them in the table.

docs/design.md ("What a 200 means, and why it holds"): a 4xx means nothing of that request was
stored. Each bad request below mixes good rows with the bad one, so a server that stores the good
half of a rejected request is caught by the final check (the table holds exactly the rows of the
one good batch).
"""

import gzip
import json

import pytest

from floe_e2e.config import STREAM
from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, assert_error_body, assert_row_error, post_events, post_large
from floe_e2e.tables import ids_exactly_once, wait_for_rows


def _good(prefix, n=3):
    return make_events(prefix, n)


def _row_error_cases():
    """(name, rows, bad row index, field named in the error)."""
    def with_bad(prefix, index, mutate):
        rows = _good(prefix, 4)
        mutate(rows[index])
        return rows

    return [
        ("wrong_type", with_bad("bad-type", 1, lambda r: r.update(seq="x")), 1, "seq"),
        ("missing_required", with_bad("bad-missing", 2, lambda r: r.pop("id")), 2, "id"),
        ("null_required", with_bad("bad-null", 3, lambda r: r.update(ns=None)), 3, "ns"),
        ("unknown_field", with_bad("bad-unknown", 0, lambda r: r.update(bogus=1)), 0, "bogus"),
        ("bad_timestamp", with_bad("bad-ts", 2, lambda r: r.update(ts="yesterday")), 2, "ts"),
        ("wrong_type_string_field", with_bad("bad-str", 1, lambda r: r.update(type=42)), 1, "type"),
    ]


@pytest.fixture(scope="module")
def server(module_floe_server_factory):
    return module_floe_server_factory()


@pytest.mark.parametrize("name,rows,bad_row,field", _row_error_cases(), ids=[c[0] for c in _row_error_cases()])
@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_row_errors_name_row_and_field(server, name, rows, bad_row, field, fmt):
    body = assert_error_body(server.post_events(rows, fmt=fmt), 400)
    assert_row_error(body, bad_row, field)


def test_malformed_json(server):
    body = b'[{"ns": "app.web", "type": "click", "id": "bad-malformed-0", "ts": 1740816000000}, {"ns": '
    assert_error_body(server.post_events(body=body), 400)


def test_malformed_ndjson_line(server):
    good = _good("bad-ndjson", 3)
    lines = [json.dumps(r) for r in good]
    lines.insert(1, '{"ns": "app.web", "type": ')
    body = ("\n".join(lines) + "\n").encode()
    assert_error_body(server.post_events(body=body, fmt="ndjson"), 400)


def test_not_an_array_of_objects(server):
    assert_error_body(server.post_events(body=b"42"), 400)
    assert_error_body(server.post_events(body=b'["not an object"]'), 400)


def test_unknown_stream_is_404(server):
    resp = post_events(server.url, _good("bad-stream"), stream="no_such_stream")
    assert_error_body(resp, 404)


def test_body_over_5mb_is_413(server):
    # ~6 MB of otherwise valid rows.
    rows, size = [], 0
    i = 0
    while size < 6 * 1024 * 1024:
        row = make_events("bad-big", 1, start=i)[0]
        row["data"] = {"pad": "x" * 4000}
        rows.append(row)
        size += 4200
        i += 1
    body = json.dumps(rows).encode()
    assert len(body) > 6_000_000
    resp = post_large(server.url, f"/v1/streams/{STREAM}/events", body)
    assert_error_body(resp, 413)


def test_invalid_gzip(server):
    resp = post_events(server.url, body=b"this is not gzip data at all", fmt="json",
                       headers={"Content-Encoding": "gzip"})
    assert_error_body(resp, 400)
    # A truncated gzip stream of valid rows.
    truncated = gzip.compress(json.dumps(_good("bad-gz-trunc")).encode())[:-12]
    resp = post_events(server.url, body=truncated, headers={"Content-Encoding": "gzip"})
    assert_error_body(resp, 400)


def test_only_the_good_batch_lands(server):
    """Runs last in this module (pytest keeps file order): after every rejection above, one good
    batch, and the table holds exactly its rows."""
    good = make_events("good", 9)
    assert_accepted(server.post_events(good), len(good))
    table = wait_for_rows(server, len(good), settle=3.0)
    ids_exactly_once(table, [e["id"] for e in good])
