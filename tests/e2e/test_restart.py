"""Every accepted row appears exactly once across graceful restarts and `kill -9`.

docs/design.md ("What a 200 means, and why it holds"): a 200 means the rows are durable and will
appear exactly once in the table, across crashes at any instruction and restarts. The checks count
ids in the table after a settle time, so late duplicates (a replay after a commit that did land)
are caught too.
"""

import time

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted
from floe_e2e.tables import ids_exactly_once, wait_for_rows

#: Extra wait after the expected count is reached, to catch rows committed twice.
SETTLE = 3.0


def _post(server, prefix, n, start=0, **kw):
    events = make_events(prefix, n, start=start)
    assert_accepted(server.post_events(events, **kw), n)
    return [e["id"] for e in events]


def test_graceful_restart(floe_server):
    ids = _post(floe_server, "a", 40)
    wait_for_rows(floe_server, len(ids))

    rc, killed = floe_server.stop()
    assert not killed, "floe serve did not exit within 20 s of SIGTERM"
    assert rc in (0, -15), f"floe serve exited with {rc} on SIGTERM"
    floe_server.restart()

    ids += _post(floe_server, "b", 40, fmt="ndjson")
    table = wait_for_rows(floe_server, len(ids), settle=SETTLE)
    ids_exactly_once(table, ids)


def test_graceful_stop_right_after_ack(floe_server):
    """Rows acknowledged just before SIGTERM (not yet committed) land after the restart: either
    the shutdown commits them or recovery does, once."""
    ids = _post(floe_server, "c", 25)
    rc, killed = floe_server.stop()
    assert not killed, "floe serve did not exit within 20 s of SIGTERM"
    floe_server.restart()
    ids += _post(floe_server, "d", 5)
    table = wait_for_rows(floe_server, len(ids), settle=SETTLE)
    ids_exactly_once(table, ids)


def test_kill9_right_after_ack(floe_server):
    """SIGKILL right after the 200, restart before the 1 s commit interval is up."""
    ids = _post(floe_server, "k", 30)
    floe_server.kill9()
    floe_server.restart()
    table = wait_for_rows(floe_server, len(ids), settle=SETTLE)
    ids_exactly_once(table, ids)

    ids += _post(floe_server, "k2", 10, fmt="ndjson", gzip=True)
    table = wait_for_rows(floe_server, len(ids), settle=SETTLE)
    ids_exactly_once(table, ids)


def test_repeated_kill9_at_different_points(floe_server):
    """Several crash/restart rounds, killing at different delays after the ack (before, around
    and after the commit interval), then one graceful stop: every acked row once."""
    ids = []
    for round_no, delay in enumerate([0.0, 0.3, 0.9, 1.2, 2.5]):
        ids += _post(floe_server, f"r{round_no}", 20)
        ids += _post(floe_server, f"r{round_no}b", 7, fmt="ndjson")
        time.sleep(delay)
        floe_server.kill9()
        floe_server.restart()
    ids += _post(floe_server, "final", 3)
    rc, killed = floe_server.stop()
    assert not killed
    floe_server.restart()
    table = wait_for_rows(floe_server, len(ids), settle=SETTLE)
    ids_exactly_once(table, ids)
