"""GET /metrics (Prometheus text) counts what happened; GET /healthz answers 200."""

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, assert_error_body, http_get
from floe_e2e.metrics import metric_value, parse_prometheus
from floe_e2e.tables import wait_for_rows


def _metrics(server):
    resp = http_get(f"{server.url}/metrics")
    assert resp.status == 200, resp
    ctype = resp.header("Content-Type") or ""
    assert ctype.startswith("text/plain") or "openmetrics" in ctype, f"Content-Type {ctype!r}"
    return resp.body.decode(), parse_prometheus(resp.body.decode())


def test_healthz(floe_server):
    assert http_get(f"{floe_server.url}/healthz").status == 200


def test_metrics_count_accepted_rejected_and_commits(floe_server):
    first = make_events("m1", 7)
    second = make_events("m2", 5)
    second.append({"ns": "drop.me", "type": "view", "id": "m2-drop", "ts": 1740816000000})
    assert_accepted(floe_server.post_events(first), 7)
    assert_accepted(floe_server.post_events(second, fmt="ndjson"), 6)

    bad = make_events("m-bad", 3)
    bad[1]["seq"] = "x"
    assert_error_body(floe_server.post_events(bad), 400)

    wait_for_rows(floe_server, 12)
    text, samples = _metrics(floe_server)

    accepted = metric_value(samples, "floe_stream_rows_accepted_total", stream="events")
    assert accepted == 13, f"floe_stream_rows_accepted_total{{stream=\"events\"}} = {accepted}, want 13\n{text}"

    rejected = metric_value(samples, "floe_stream_rows_rejected_total", stream="events")
    assert rejected is not None, f"no floe_stream_rows_rejected_total{{stream=\"events\"}}\n{text}"
    # one bad row in a rejected request of 3: counted as 1 (the bad row) or 3 (the request's rows)
    assert 1 <= rejected <= 3, f"floe_stream_rows_rejected_total = {rejected}\n{text}"

    commits = metric_value(samples, "floe_sink_commits_total", sink="events_table")
    assert commits is not None and commits >= 1, f"floe_sink_commits_total{{sink=\"events_table\"}} = {commits}\n{text}"


def test_metrics_are_counters_that_only_grow(floe_server):
    assert_accepted(floe_server.post_events(make_events("g1", 4)), 4)
    _, before = _metrics(floe_server)
    assert_accepted(floe_server.post_events(make_events("g2", 6)), 6)
    wait_for_rows(floe_server, 10)
    _, after = _metrics(floe_server)
    a0 = metric_value(before, "floe_stream_rows_accepted_total", stream="events")
    a1 = metric_value(after, "floe_stream_rows_accepted_total", stream="events")
    assert (a0, a1) == (4, 10), (a0, a1)
    c1 = metric_value(after, "floe_sink_commits_total", sink="events_table")
    assert c1 is not None and c1 >= 1
