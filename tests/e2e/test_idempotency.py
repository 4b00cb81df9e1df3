"""`Idempotency-Key` on `POST /v1/streams/{s}/events` (docs/design.md "Idempotency keys"; README.md
"HTTP").

The contract under test:
- A retry with the same key (per stream) within `[limits] idempotency_window_seconds` (default
  86400) gets the FIRST 200 answer back (same JSON: accepted, first_offset, next_offset) with the
  response header `Idempotent-Replayed: true`, and stores nothing new.
- This holds across a graceful restart and a `kill -9` right after the 200.
- Concurrent requests with one key: one copy stored, every one gets 200 with the same offsets.
- A request answered 4xx is not remembered: a corrected retry with the same key is processed.
- A key longer than 200 characters is refused: 400, `error.code == "bad_idempotency_key"`.
- Keys are per stream: the same key on another stream is a different request.

Retries here send the same bytes as the first request (what a retrying client does); the contract
says nothing about a different body under a reused key, so that is not tested.

"Stores nothing new" is checked twice: the next request without a key must start at the
`next_offset` of the first answer (offsets are assigned contiguously per stream), and the table
must hold each id exactly once after a settle time (late duplicates).
"""

import threading
import time

from floe_e2e.config import OTHER_STREAM, OTHER_TABLE, STREAM, two_stream_extra
from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, assert_error_body, is_replayed, key_headers
from floe_e2e.tables import id_counts, ids_exactly_once, read_table, wait_for_ids

#: Extra wait after the expected ids are in the table, to catch rows committed twice.
SETTLE = 3.0


def _post(server, events, key=None, stream=STREAM, **kw):
    headers = key_headers(key) if key is not None else None
    return server.post_events(events, stream=stream, headers=headers, **kw)


def _ids(events):
    return [e["id"] for e in events]


def _assert_first(resp, n):
    """A first answer: 200, `accepted == n`, offsets present, not marked as replayed."""
    body = assert_accepted(resp, n)
    assert isinstance(body.get("first_offset"), int) and isinstance(body.get("next_offset"), int), body
    assert body["next_offset"] - body["first_offset"] == n, f"offsets do not span {n} rows: {body}"
    assert not is_replayed(resp), f"a first request is marked as replayed: headers {resp.headers}"
    return body


def _assert_replay_of(first, again, what="retry"):
    """`again` is the first answer replayed: 200, same JSON, `Idempotent-Replayed: true`."""
    assert again.status == 200, f"{what}: expected 200 (replay), got {again.status}: {again.body[:500]!r}"
    assert is_replayed(again), (
        f"{what}: no `Idempotent-Replayed: true` header on the replayed answer; headers {again.headers}"
    )
    assert again.json() == first.json(), (
        f"{what}: the replayed answer differs from the first one: first {first.json()}, replay {again.json()}"
    )


def _assert_nothing_appended_since(server, first_body, stream=STREAM, prefix="probe"):
    """Appends a small keyless batch: it must start where the first answer ended."""
    probe = make_events(prefix, 2)
    body = assert_accepted(_post(server, probe, stream=stream), 2)
    assert body["first_offset"] == first_body["next_offset"], (
        f"the stream's log grew between the first answer (next_offset {first_body['next_offset']}) and "
        f"the next request (first_offset {body['first_offset']}): the retry stored rows"
    )
    return _ids(probe)


def test_same_request_twice_stores_one_copy(floe_server):
    events = make_events("twice", 10)
    first = _post(floe_server, events, key="key-twice")
    first_body = _assert_first(first, 10)

    again = _post(floe_server, events, key="key-twice")
    _assert_replay_of(first, again)
    third = _post(floe_server, events, key="key-twice")
    _assert_replay_of(first, third, "second retry")

    ids = _ids(events) + _assert_nothing_appended_since(floe_server, first_body)
    table = wait_for_ids(floe_server, ids, settle=SETTLE)
    ids_exactly_once(table, ids)


def test_replay_survives_graceful_restart(floe_server):
    events = make_events("graceful", 12)
    first = _post(floe_server, events, key="key-graceful")
    first_body = _assert_first(first, 12)

    rc, killed = floe_server.stop()
    assert not killed, "floe serve did not exit within 20 s of SIGTERM"
    floe_server.start()

    again = _post(floe_server, events, key="key-graceful")
    _assert_replay_of(first, again, "retry after a graceful restart")

    ids = _ids(events) + _assert_nothing_appended_since(floe_server, first_body)
    table = wait_for_ids(floe_server, ids, settle=SETTLE)
    ids_exactly_once(table, ids)


def test_replay_survives_kill9_right_after_the_200(floe_server):
    events = make_events("killed", 15)
    first = _post(floe_server, events, key="key-kill9")
    first_body = _assert_first(first, 15)

    floe_server.kill9()  # before the 1 s commit interval is up: the rows are in the log only
    floe_server.start()

    again = _post(floe_server, events, key="key-kill9")
    _assert_replay_of(first, again, "retry after kill -9 and restart")

    # and once more after a second crash, now that the rows may be committed
    floe_server.kill9()
    floe_server.start()
    third = _post(floe_server, events, key="key-kill9")
    _assert_replay_of(first, third, "retry after a second kill -9")

    ids = _ids(events) + _assert_nothing_appended_since(floe_server, first_body)
    table = wait_for_ids(floe_server, ids, settle=SETTLE)
    ids_exactly_once(table, ids)


def test_concurrent_requests_with_one_key_store_one_copy(floe_server):
    """8 threads send the same request with the same key at once, in 3 rounds (3 keys)."""
    threads_per_round = 8
    all_ids = []
    for round_no in range(3):
        events = make_events(f"conc{round_no}", 20)
        key = f"key-concurrent-{round_no}"
        barrier = threading.Barrier(threads_per_round)
        results = [None] * threads_per_round

        def send(i, events=events, key=key, barrier=barrier, results=results):
            try:
                barrier.wait(timeout=10)
                results[i] = _post(floe_server, events, key=key)
            except BaseException as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(threads_per_round)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a concurrent request did not finish within 60 s"

        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"round {round_no}: requests failed: {errors[:3]}"
        statuses = [r.status for r in results]
        assert statuses == [200] * threads_per_round, (
            f"round {round_no}: every concurrent same-key request must get 200; got {statuses}: "
            f"{[r.body[:200] for r in results if r.status != 200][:3]}"
        )
        bodies = [r.json() for r in results]
        spans = {(b.get("accepted"), b.get("first_offset"), b.get("next_offset")) for b in bodies}
        assert len(spans) == 1, f"round {round_no}: concurrent same-key answers differ: {bodies}"
        assert bodies[0]["accepted"] == 20, bodies[0]
        originals = [r for r in results if not is_replayed(r)]
        assert len(originals) == 1, (
            f"round {round_no}: expected exactly one original answer and {threads_per_round - 1} "
            f"replays (`Idempotent-Replayed: true`), got {len(originals)} without the header"
        )
        all_ids += _ids(events)

    table = wait_for_ids(floe_server, all_ids, settle=SETTLE)
    ids_exactly_once(table, all_ids)


def test_rejected_request_is_not_remembered(floe_server):
    """400 with a key, then the corrected request with the same key: processed normally."""
    bad = make_events("bad", 5)
    bad[2]["seq"] = "not a number"
    r = _post(floe_server, bad, key="key-fixed-later")
    assert_error_body(r, 400)

    good = make_events("good", 6)
    first = _post(floe_server, good, key="key-fixed-later")
    first_body = _assert_first(first, 6)
    assert first_body["first_offset"] == 0, (
        f"the rejected request must not have stored anything: the first accepted rows start at offset "
        f"{first_body['first_offset']}"
    )
    again = _post(floe_server, good, key="key-fixed-later")
    _assert_replay_of(first, again, "retry of the corrected request")

    ids = _ids(good) + _assert_nothing_appended_since(floe_server, first_body)
    table = wait_for_ids(floe_server, ids, settle=SETTLE)
    ids_exactly_once(table, ids)


def test_key_longer_than_200_chars_is_refused(floe_server):
    events = make_events("longkey", 4)
    r = _post(floe_server, events, key="x" * 201)
    body = assert_error_body(r, 400)
    assert body["error"]["code"] == "bad_idempotency_key", body

    ok_events = make_events("key200", 3)
    first = _post(floe_server, ok_events, key="y" * 200)
    first_body = _assert_first(first, 3)
    assert first_body["first_offset"] == 0, f"the refused request stored rows: {first_body}"
    again = _post(floe_server, ok_events, key="y" * 200)
    _assert_replay_of(first, again, "retry with a 200-character key")

    ids = _ids(ok_events) + _assert_nothing_appended_since(floe_server, first_body)
    table = wait_for_ids(floe_server, ids, settle=SETTLE)
    ids_exactly_once(table, ids)


def test_same_key_on_another_stream_is_independent(floe_server_factory):
    server = floe_server_factory(extra=two_stream_extra())
    key = "key-shared-by-two-streams"
    ev = make_events("ev", 7)
    ot = make_events("ot", 4)

    first_ev = _post(server, ev, key=key)
    _assert_first(first_ev, 7)
    first_ot = _post(server, ot, key=key, stream=OTHER_STREAM)
    _assert_first(first_ot, 4)  # not a replay of the events stream's answer

    _assert_replay_of(first_ev, _post(server, ev, key=key), "retry on events")
    _assert_replay_of(first_ot, _post(server, ot, key=key, stream=OTHER_STREAM), "retry on other")

    ev_ids = _ids(ev) + _assert_nothing_appended_since(server, first_ev.json(), prefix="evprobe")
    ot_ids = _ids(ot) + _assert_nothing_appended_since(
        server, first_ot.json(), stream=OTHER_STREAM, prefix="otprobe"
    )
    ids_exactly_once(wait_for_ids(server, ev_ids, settle=SETTLE), ev_ids)
    ids_exactly_once(wait_for_ids(server, ot_ids, settle=SETTLE, table=OTHER_TABLE), ot_ids)


def test_key_is_forgotten_after_the_window(floe_server_factory):
    """`idempotency_window_seconds = 2`: a retry within it is replayed; the same key 3.5 s after
    the first request is a new request (stored again: the client asked for it)."""
    server = floe_server_factory(limits={"idempotency_window_seconds": 2})
    events = make_events("window", 5)
    first = _post(server, events, key="key-window")
    first_body = _assert_first(first, 5)
    _assert_replay_of(first, _post(server, events, key="key-window"), "retry within the window")

    time.sleep(3.5)
    late = _post(server, events, key="key-window")
    late_body = _assert_first(late, 5)
    assert late_body["first_offset"] == first_body["next_offset"], (
        f"after the window the same key must be a new request: first {first_body}, late {late_body}"
    )

    table = _wait_for_copies(server, _ids(events), copies=2)
    counts = id_counts(table)
    assert all(counts[i] == 2 for i in _ids(events)), f"expected each id twice: {dict(counts)}"


def _wait_for_copies(server, ids, copies, timeout=60.0):
    """Waits until each id is in the table `copies` times (then settles); returns the table."""
    deadline = time.monotonic() + timeout
    while True:
        table = wait_for_ids(server, ids, timeout=max(1.0, deadline - time.monotonic()))
        counts = id_counts(table)
        if all(counts[i] >= copies for i in ids):
            break
        assert time.monotonic() < deadline, f"not {copies} copies of each id after {timeout}s: {dict(counts)}"
        time.sleep(0.25)
    time.sleep(SETTLE)
    return read_table(server)
