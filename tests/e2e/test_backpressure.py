"""Backpressure (429) and sinks whose commits fail (docs/design.md "Backpressure"; docs/config.md
"Limits and what they answer"; `/healthz` and `/metrics` in README.md "HTTP").

Contract:
- `[limits] max_uncommitted_rows`: when the slowest pipeline reading a stream is that many rows
  behind the log's end, ingest answers 429 with `Retry-After`, `error.code == "backpressure"`,
  `error.limit == "limits.max_uncommitted_rows"`; it recovers by itself once the sink commits.
- `[limits] stream_max_disk_bytes`: when a stream's log on disk exceeds it, 429 the same way with
  `error.limit == "limits.stream_max_disk_bytes"`. Recovery needs whole 64 MiB segments to be
  truncated, which a test cannot make happen quickly, so only the refusal is tested.
- A 429 stores nothing.
- A sink whose commits fail shows on `GET /healthz` as `{"status": "degraded", "failing_sinks":
  [{"pipeline", "sink", "error"}]}` and in `floe_sink_commit_failures_total`; once the cause is
  gone it commits again, `status` is back to `ok`, and every acknowledged row lands once.
"""

import email.utils
import re

from floe_e2e.config import SINK
from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, assert_error_body
from floe_e2e.metrics import healthz, metric_value, metrics_samples
from floe_e2e.server import wait_until
from floe_e2e.tables import ids_exactly_once, wait_for_ids

SETTLE = 3.0
PIPELINE = "events_to_table"


def _ids(events):
    return [e["id"] for e in events]


def _assert_backpressure(resp, limit):
    body = assert_error_body(resp, 429)
    err = body["error"]
    assert err["code"] == "backpressure", f"error.code: {body}"
    assert err.get("limit") == limit, f"error.limit should name {limit!r}: {body}"
    retry_after = resp.header("Retry-After")
    assert retry_after is not None, f"429 without a Retry-After header: {resp.headers}"
    assert _valid_retry_after(retry_after.strip()), (
        f"Retry-After is neither delay-seconds nor an HTTP date: {retry_after!r}"
    )
    return body


def _valid_retry_after(value):
    """RFC 9110: `Retry-After: <delay-seconds>` or `Retry-After: <HTTP-date>`."""
    if re.fullmatch(r"\d+", value):
        return True
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


def test_max_uncommitted_rows_refuses_then_recovers_after_the_commit(floe_server_factory):
    server = floe_server_factory(interval_seconds=5, limits={"max_uncommitted_rows": 50})
    first = make_events("under", 60)
    assert_accepted(server.post_events(first), 60)  # 0 rows behind when it arrived: accepted

    # 60 rows behind (the commit is at most 5 s away): refused, and nothing stored
    refused = make_events("refused", 5)
    _assert_backpressure(server.post_events(refused), "limits.max_uncommitted_rows")
    refused2 = make_events("refused2", 1)
    _assert_backpressure(server.post_events(refused2, fmt="ndjson"), "limits.max_uncommitted_rows")

    wait_for_ids(server, _ids(first), timeout=30)  # the sink committed: no longer behind

    after = make_events("after", 10)
    statuses = []

    def accepted():
        r = server.post_events(after)
        statuses.append(r.status)
        if r.status == 429:
            return None
        assert_accepted(r, 10)
        return r

    # the position moves in the same step as the commit; allow a moment for it, no more
    wait_until(accepted, timeout=5, what="ingest to accept again after the commit", interval=0.25)
    assert statuses.count(429) <= 3, f"still refused well after the commit: {statuses}"

    ids = _ids(first) + _ids(after)
    table = wait_for_ids(server, ids, timeout=30, settle=SETTLE)
    ids_exactly_once(table, ids)  # and nothing of the refused requests


def test_stream_max_disk_bytes_refuses(floe_server_factory):
    budget = 4096
    server = floe_server_factory(limits={"stream_max_disk_bytes": budget})
    first = make_events("disk", 300)  # far more than 4 KiB as an Arrow IPC record
    assert_accepted(server.post_events(first), 300)

    disk = metric_value(metrics_samples(server), "floe_stream_log_disk_bytes", stream="events")
    assert disk is not None and disk > budget, f"premise: the log should now be over {budget} bytes: {disk}"

    refused = make_events("refused", 3)
    _assert_backpressure(server.post_events(refused), "limits.stream_max_disk_bytes")

    # the first batch still lands (once), the refused one never
    table = wait_for_ids(server, _ids(first), timeout=30, settle=SETTLE)
    ids_exactly_once(table, _ids(first))


def test_failing_sink_is_visible_and_recovers(floe_server_factory):
    """The table's data folder is replaced by a regular file (which makes every write under it fail,
    even as root), then put back."""
    server = floe_server_factory()
    before = make_events("before", 30)
    assert_accepted(server.post_events(before), 30)
    wait_for_ids(server, _ids(before), timeout=30)
    status, health = healthz(server)
    assert health.get("status") == "ok" and health.get("failing_sinks") == [], f"healthy at first: {status} {health}"

    data_dir = server.warehouse / "analytics" / "events" / "data"
    assert data_dir.is_dir(), f"premise: {data_dir} should exist once rows are committed"
    moved = data_dir.with_name("data.moved-by-test")
    data_dir.rename(moved)
    data_dir.write_text("not a directory: writes under data/ fail\n")
    during = make_events("during", 20)
    try:
        assert_accepted(server.post_events(during), 20)  # ingest is unaffected: the log is elsewhere

        def degraded():
            _status, h = healthz(server)
            return h if h.get("status") == "degraded" else None

        health = wait_until(degraded, timeout=20, what="/healthz to report status degraded")
        failing = health.get("failing_sinks")
        assert isinstance(failing, list) and failing, f"degraded but no failing_sinks: {health}"
        mine = [f for f in failing if f.get("sink") == SINK]
        assert mine, f"failing_sinks does not name sink {SINK!r}: {health}"
        assert mine[0].get("pipeline") == PIPELINE, f"failing_sinks entry: {mine[0]}"
        assert isinstance(mine[0].get("error"), str) and mine[0]["error"], f"no error text: {mine[0]}"

        failures = metric_value(metrics_samples(server), "floe_sink_commit_failures_total", sink=SINK)
        assert failures is not None and failures > 0, f"floe_sink_commit_failures_total{{sink={SINK!r}}} = {failures}"
    finally:
        data_dir.unlink()
        moved.rename(data_dir)

    after = make_events("after", 10)
    assert_accepted(server.post_events(after), 10)

    def ok_again():
        _status, h = healthz(server)
        return h if h.get("status") == "ok" and h.get("failing_sinks") == [] else None

    # the runner retries with a backoff that doubles from 0.5 s; a few failures in, it is a few s
    wait_until(ok_again, timeout=45, what="/healthz to be back to status ok after the fix")

    ids = _ids(before) + _ids(during) + _ids(after)
    table = wait_for_ids(server, ids, timeout=45, settle=SETTLE)
    ids_exactly_once(table, ids)
