"""Graceful shutdown on SIGTERM (docs/design.md "Shutdown" and "Micro-batches and rolling").

Contract: SIGTERM → stop accepting connections, finish the requests in flight, commit what is
durable (also rows the sink would only commit much later: `rolling.interval_seconds = 3600`),
exit with code 0 within 30 s. Every request that got a 200 is in the table, exactly once.

The table is read with PyIceberg while no server runs, so what it holds is what the shutdown
committed; a restart and a second graceful stop then show that the committed position moved with
it (no replay, no duplicates).
"""

import http.client
import json
import random
import socket
import threading
import time

from floe_e2e.config import LOOPBACK, STREAM
from floe_e2e.events import make_events
from floe_e2e.http import CONNECTION_ERRORS, Response, assert_accepted, try_post_events
from floe_e2e.tables import id_counts, ids_exactly_once, read_table, read_table_or_none, wait_for_ids

#: The contract's bound on a graceful shutdown.
EXIT_WITHIN = 30.0
SETTLE = 3.0


def _ids(events):
    return [e["id"] for e in events]


def _sigterm_and_wait(server):
    server.terminate()
    rc, waited = server.wait_exit(EXIT_WITHIN)
    assert rc is not None, f"floe serve did not exit within {EXIT_WITHIN} s of SIGTERM"
    return rc, waited


def test_sigterm_commits_rows_waiting_for_a_long_roll(floe_server_factory):
    server = floe_server_factory(interval_seconds=3600)
    batches = [make_events("p1", 20), make_events("p2", 15), make_events("p3", 10)]
    assert_accepted(server.post_events(batches[0]), 20)
    assert_accepted(server.post_events(batches[1], fmt="ndjson"), 15)
    assert_accepted(server.post_events(batches[2], gzip=True), 10)
    ids = [i for b in batches for i in _ids(b)]

    time.sleep(1.0)  # the runner has read the rows by now; the roll is an hour away
    pending = read_table_or_none(server)
    assert pending is None or pending.num_rows == 0, (
        f"premise: with interval_seconds = 3600 nothing should be committed yet, found {pending.num_rows} rows"
    )

    rc, waited = _sigterm_and_wait(server)
    assert rc == 0, f"floe serve exited with code {rc} after SIGTERM (want 0)"
    table = read_table_or_none(server)
    assert table is not None and table.num_rows > 0, (
        f"SIGTERM did not commit the {len(ids)} acknowledged rows waiting for the roll (table: "
        f"{'missing' if table is None else '0 rows'})"
    )
    ids_exactly_once(table, ids)

    # restart and stop again: nothing is replayed into the table a second time
    server.start()
    time.sleep(1.0)
    rc2, _ = _sigterm_and_wait(server)
    assert rc2 == 0, f"second SIGTERM: exit code {rc2}"
    ids_exactly_once(read_table(server), ids)


def _start_slow_request(server, events):
    """Starts a POST whose body is only half sent, and returns (socket, rest of the body).

    The request says `Expect: 100-continue` and waits for the interim `100 Continue`, which the
    server sends once its handler reads the body: from then on the request is certainly in
    flight (not just a connection waiting in the listen backlog). Then half the body is sent.
    """
    body = json.dumps(events).encode()
    half = len(body) // 2
    sock = socket.create_connection((LOOPBACK, server.port), timeout=15)
    head = (
        f"POST /v1/streams/{STREAM}/events HTTP/1.1\r\n"
        f"Host: {LOOPBACK}:{server.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n"
        "Connection: close\r\n\r\n"
    )
    sock.sendall(head.encode("latin-1"))
    interim = b""
    deadline = time.monotonic() + 10
    for _ in range(100):  # recv blocks (socket timeout 15 s); an interim answer is ~25 bytes
        if b"\r\n\r\n" in interim:
            break
        assert time.monotonic() < deadline, f"no interim answer to Expect: 100-continue within 10 s: {interim!r}"
        chunk = sock.recv(1024)
        assert chunk, f"connection closed before the interim answer: {interim!r}"
        interim += chunk
    assert b"\r\n\r\n" in interim, f"no complete interim answer: {interim!r}"
    status_line = interim.split(b"\r\n", 1)[0]
    assert status_line.split()[1:2] == [b"100"], f"expected `100 Continue`, got {status_line!r}"
    rest_of_interim = interim.split(b"\r\n\r\n", 1)[1]
    assert not rest_of_interim, f"unexpected bytes after the interim answer: {rest_of_interim!r}"
    sock.sendall(body[:half])
    return sock, body[half:]


def _finish_slow_request(sock, rest) -> Response:
    try:
        sock.sendall(rest)
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        data = resp.read()
        return Response(resp.status, dict(resp.getheaders()), data)
    finally:
        sock.close()


def test_sigterm_finishes_the_request_in_flight_and_stops_accepting(floe_server_factory):
    server = floe_server_factory(interval_seconds=3600)
    early = make_events("early", 10)
    assert_accepted(server.post_events(early), 10)

    slow = make_events("slow", 200)
    sock, rest = _start_slow_request(server, slow)
    time.sleep(0.1)
    server.terminate()
    time.sleep(0.4)

    late = make_events("late", 3)
    late_answer = try_post_events(server.url, late, timeout=3)
    try:
        slow_answer = _finish_slow_request(sock, rest)
    except CONNECTION_ERRORS as e:
        raise AssertionError(
            f"the request in flight at SIGTERM was cut off instead of finished: {e!r}"
        ) from None
    assert_accepted(slow_answer, 200)

    rc, _ = server.wait_exit(EXIT_WITHIN)
    assert rc is not None, f"floe serve did not exit within {EXIT_WITHIN} s of SIGTERM"
    assert rc == 0, f"exit code {rc} after SIGTERM (want 0)"

    acked = _ids(early) + _ids(slow)
    if isinstance(late_answer, Response) and late_answer.status == 200:
        acked += _ids(late)  # it must land then; but it should not have been accepted at all
    table = read_table_or_none(server)
    assert table is not None, "no table after the shutdown commit"
    ids_exactly_once(table, acked)

    assert not (isinstance(late_answer, Response) and late_answer.status == 200), (
        "a new request sent 0.4 s after SIGTERM was accepted (200): the server should stop accepting"
    )


def test_sigterm_under_load_every_200_lands(floe_server_factory):
    """4 clients send batches of 100–400 rows back to back; SIGTERM 1.5 s in. Every request that
    got 200 must be committed by the shutdown, and be in the table exactly once after a restart."""
    server = floe_server_factory(interval_seconds=1)
    stop = threading.Event()
    deadline = time.monotonic() + 60
    lock = threading.Lock()
    acked: list[str] = []
    sent: list[str] = []
    windows: list[tuple[float, float]] = []  # (start, end) of each acked request
    problems: list[str] = []

    def client(cid):
        rng = random.Random(cid)
        n = 0
        try:
            for _ in range(10_000):  # bounded in count, and in time by `deadline`
                if stop.is_set() or time.monotonic() > deadline:
                    break
                size = rng.randint(100, 400)
                events = make_events(f"s{cid}", size, start=n)
                n += size
                with lock:
                    sent.extend(_ids(events))
                t0 = time.monotonic()
                r = try_post_events(server.url, events, timeout=20)
                t1 = time.monotonic()
                if isinstance(r, BaseException):
                    time.sleep(0.05)  # the server is gone or going: these ids are unacknowledged
                    continue
                if r.status == 200:
                    accepted = r.json().get("accepted")
                    with lock:
                        acked.extend(_ids(events))
                        windows.append((t0, t1))
                        if accepted != size:
                            problems.append(f"client {cid}: 200 with accepted={accepted} for {size} rows")
                elif r.status != 503:
                    with lock:
                        problems.append(f"client {cid}: unexpected answer {r.status}: {r.body[:200]!r}")
        except BaseException as e:  # reported below
            with lock:
                problems.append(f"client {cid} crashed: {e!r}")

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        acked_before = len(acked)
        t_sig = time.monotonic()
        server.terminate()
        rc, waited = server.wait_exit(EXIT_WITHIN)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a client thread did not stop"

    in_flight = sum(1 for a, b in windows if a < t_sig < b)
    at_exit = read_table_or_none(server) if rc is not None else None
    missing_at_exit = set(acked) - (set(at_exit.column("id").to_pylist()) if at_exit is not None else set())
    print(
        f"SIGTERM under load: {len(acked)} rows acked ({acked_before} before the signal, "
        f"{in_flight} requests in flight at it), {len(sent)} sent; exit code {rc} after {waited:.1f}s; "
        f"{len(missing_at_exit)} acked rows not committed at exit"
    )
    assert rc is not None, f"floe serve did not exit within {EXIT_WITHIN} s of SIGTERM"
    assert acked_before > 0, "premise: no request was acknowledged before SIGTERM"

    server.start()
    table = wait_for_ids(server, acked, timeout=60, settle=SETTLE)
    counts = id_counts(table)
    dupes = sorted(i for i, c in counts.items() if c > 1)
    foreign = sorted(set(counts) - set(sent))
    assert not dupes, f"{len(dupes)} ids twice or more after restart, e.g. {dupes[:5]}"
    assert not foreign, f"ids that were never sent: {foreign[:5]}"
    assert not problems, f"client problems: {problems[:5]}"
    assert rc == 0, f"exit code {rc} after SIGTERM (want 0)"
    assert not missing_at_exit, (
        f"{len(missing_at_exit)} acknowledged rows were not committed by the graceful shutdown "
        f"(they landed only after the restart), e.g. {sorted(missing_at_exit)[:5]}"
    )
