"""Crash loop: steady load from 4 clients while `floe serve` is SIGKILLed at random moments.

docs/design.md ("What a 200 means, and why it holds"; "Idempotency keys"): a 200 means the rows
land exactly once, across `kill -9` at any instruction; a retry with the same `Idempotency-Key`
gets the first answer and stores no second copy.

Each client sends batches of 1–50 uniquely numbered events (ids `c{client}-{n}`). The server
(rolling interval 1 s) is killed with SIGKILL at least 20 times, at moments drawn from a seeded
RNG (uptimes from a few ms, i.e. during recovery, to past the commit interval), and restarted.

- Variant 1 (no key): a request whose answer was lost (connection refused or reset) is given up;
  its ids are never sent again. At the end every acknowledged id is in the table exactly once,
  the unacknowledged ones at most once, and no id that was never sent.
- Variant 2 (`Idempotency-Key`): a client retries its un-acked request, same key and same bytes,
  until it gets a 200 (also after restarts). Then every id sent is in the table exactly once.

In both, the offsets of distinct acknowledged requests never overlap.

The seed is printed at the start; `FLOE_CRASH_SEED=<n>` repeats the kill schedule and the batch
sizes (thread timing still varies). `FLOE_CRASH_KILLS` raises the number of kills (default 20).
"""

import collections
import dataclasses
import os
import random
import threading
import time
import traceback

from floe_e2e.events import make_events
from floe_e2e.http import is_replayed, key_headers, try_post_events
from floe_e2e.tables import id_counts, read_table, wait_for_ids

KILLS = int(os.environ.get("FLOE_CRASH_KILLS", "20"))
CLIENTS = 4
SETTLE = 3.0
#: Statuses a client may see while the server is being killed and restarted.
RETRYABLE = (429, 503)
#: Hard cap on the requests of one client (the loop is also bounded in time).
MAX_REQUESTS_PER_CLIENT = 50_000


def _seed() -> int:
    value = os.environ.get("FLOE_CRASH_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


@dataclasses.dataclass
class ClientRecord:
    acked: list = dataclasses.field(default_factory=list)  # ids whose request got 200
    sent: list = dataclasses.field(default_factory=list)  # ids of every request sent
    abandoned: list = dataclasses.field(default_factory=list)  # ids given up after a 4xx (variant 2)
    spans: list = dataclasses.field(default_factory=list)  # (first_offset, next_offset, rows) per 200
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    unexpected: list = dataclasses.field(default_factory=list)
    requests: int = 0
    connection_errors: int = 0
    replays: int = 0
    crashed: str | None = None
    unfinished: bool = False


def _client(cid, url, seed, use_keys, stop, deadline, rec: ClientRecord):
    rng = random.Random((seed * 2 + use_keys) * 100 + cid)
    n = 0
    req_no = 0
    pending = None  # (events, key) not yet acknowledged
    try:
        while True:
            if time.monotonic() > deadline or rec.requests >= MAX_REQUESTS_PER_CLIENT:
                rec.unfinished = pending is not None
                return
            if pending is None:
                if stop.is_set():
                    return
                size = rng.randint(1, 50)
                events = make_events(f"c{cid}", size, start=n)
                n += size
                key = f"crash-{seed}-c{cid}-r{req_no}" if use_keys else None  # unique per request
                req_no += 1
                pending = (events, key)
                rec.sent.extend(e["id"] for e in events)
            events, key = pending
            ids = [e["id"] for e in events]
            rec.requests += 1
            r = try_post_events(url, events, headers=key_headers(key) if key else None, timeout=15)
            if isinstance(r, BaseException):
                rec.connection_errors += 1
                if not use_keys:
                    pending = None  # unacknowledged for good: these ids are never sent again
                time.sleep(0.02)
                continue
            rec.statuses[r.status] += 1
            if r.status == 200:
                body = r.json()
                if body.get("accepted") != len(events):
                    rec.unexpected.append(f"200 with accepted={body.get('accepted')} for {len(events)} rows")
                rec.acked.extend(ids)
                rec.spans.append((body.get("first_offset"), body.get("next_offset"), len(events)))
                rec.replays += is_replayed(r)
                pending = None
                time.sleep(0.003)
            elif r.status in RETRYABLE:
                if not use_keys:
                    pending = None
                time.sleep(0.05)
            else:
                rec.unexpected.append(f"{r.status}: {r.body[:200]!r}")
                if r.status < 500:  # 4xx: nothing stored, retrying the same bytes will not help
                    rec.abandoned.extend(ids)
                    pending = None
                elif not use_keys:
                    pending = None
                time.sleep(0.05)
    except BaseException:
        rec.crashed = traceback.format_exc()


def _run_crash_loop(server, *, seed, use_keys):
    rng = random.Random(seed * 2 + use_keys)  # the variants get different schedules
    stop = threading.Event()
    budget = KILLS * 4 + 90
    deadline = time.monotonic() + budget
    records = [ClientRecord() for _ in range(CLIENTS)]
    threads = [
        threading.Thread(
            target=_client,
            args=(c, server.url, seed, use_keys, stop, deadline, records[c]),
            name=f"crash-client-{c}",
            daemon=True,
        )
        for c in range(CLIENTS)
    ]
    kills = 0
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            # 1 in 5 kills hits the first 200 ms after start (recovery, replay); the rest fall
            # anywhere up to past the 1 s commit interval.
            uptime = rng.uniform(0.0, 0.2) if rng.random() < 0.2 else rng.uniform(0.2, 2.2)
            time.sleep(uptime)
            server.kill9()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))  # clients meet a closed port meanwhile
            server.start()
        time.sleep(1.0)  # load on the last incarnation too
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()) + 5)
    load_seconds = time.monotonic() - started
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"seed {seed}: client threads did not finish: {alive}"
    return records, kills, load_seconds


def _check(server, records, *, seed, kills, load_seconds, use_keys):
    acked = [i for r in records for i in r.acked]
    sent = [i for r in records for i in r.sent]
    abandoned = {i for r in records for i in r.abandoned}
    acked_set, sent_set = set(acked), set(sent)

    timeout_note = None
    try:
        table = wait_for_ids(server, acked_set, timeout=90, settle=SETTLE)
    except AssertionError as e:  # report everything below, not just the timeout
        timeout_note = str(e)
        table = read_table(server)
    counts = id_counts(table)
    in_table = set(counts)

    dupes = sorted(i for i, c in counts.items() if c > 1)
    missing_acked = sorted(acked_set - in_table)
    foreign = sorted(in_table - sent_set)
    unacked = sent_set - acked_set
    unacked_in_table = len(unacked & in_table)
    statuses = sum((r.statuses for r in records), collections.Counter())
    unexpected = [u for r in records for u in r.unexpected]
    crashed = [r.crashed for r in records if r.crashed]
    unfinished = sum(r.unfinished for r in records)

    # distinct acknowledged requests never share offsets
    spans = [s for r in records for s in r.spans]
    bad_spans = [s for s in spans if not (isinstance(s[0], int) and isinstance(s[1], int) and s[1] - s[0] == s[2])]
    good_spans = sorted(s for s in spans if s not in bad_spans)
    overlaps = [(a, b) for a, b in zip(good_spans, good_spans[1:]) if b[0] < a[1]]

    print(
        f"crash loop ({'Idempotency-Key retries' if use_keys else 'no key'}), seed {seed}: "
        f"{kills} kills in {load_seconds:.1f}s; {sum(r.requests for r in records)} requests "
        f"({sum(r.connection_errors for r in records)} connection errors, statuses {dict(statuses)}, "
        f"{sum(r.replays for r in records)} replayed answers); {len(sent_set)} ids sent, "
        f"{len(acked_set)} acknowledged, {len(unacked)} unacknowledged of which {unacked_in_table} in "
        f"the table; {table.num_rows} rows in the table"
    )

    problems = []
    if timeout_note:
        problems.append(timeout_note)
    if crashed:
        problems.append(f"client thread crashed:\n{crashed[0]}")
    if len(acked) != len(acked_set):
        problems.append("an id was acknowledged twice (test bug or replay of a different request)")
    if missing_acked:
        problems.append(f"{len(missing_acked)} acknowledged ids missing, e.g. {missing_acked[:5]}")
    if dupes:
        problems.append(f"{len(dupes)} ids in the table more than once, e.g. {dupes[:5]}")
    if foreign:
        problems.append(f"{len(foreign)} ids in the table that were never sent, e.g. {foreign[:5]}")
    if bad_spans:
        problems.append(f"200 answers whose offsets do not span the batch: {bad_spans[:3]}")
    if overlaps:
        problems.append(f"two acknowledged requests share offsets: {overlaps[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected answers, e.g. {unexpected[:3]}")
    if use_keys:
        if unfinished:
            problems.append(f"{unfinished} clients still had an unacknowledged request at the deadline")
        never_acked = sorted(unacked - abandoned)
        if never_acked:
            problems.append(f"{len(never_acked)} ids sent with a key were never acknowledged, e.g. {never_acked[:5]}")
        missing_sent = sorted(sent_set - abandoned - in_table)
        if missing_sent:
            problems.append(f"{len(missing_sent)} ids sent (with retries) missing from the table, e.g. {missing_sent[:5]}")
    assert not problems, f"seed {seed} (FLOE_CRASH_SEED={seed} repeats the schedule):\n- " + "\n- ".join(problems)
    assert acked_set, "premise: no request was acknowledged at all"


def test_crash_loop_every_acked_row_exactly_once(floe_server_factory):
    seed = _seed()
    print(f"\ncrash loop seed: {seed} (FLOE_CRASH_SEED={seed} to repeat), {KILLS} kills")
    server = floe_server_factory(interval_seconds=1)
    records, kills, load_seconds = _run_crash_loop(server, seed=seed, use_keys=False)
    _check(server, records, seed=seed, kills=kills, load_seconds=load_seconds, use_keys=False)


def test_crash_loop_with_idempotency_key_retries(floe_server_factory):
    seed = _seed()
    print(f"\ncrash loop (Idempotency-Key) seed: {seed} (FLOE_CRASH_SEED={seed} to repeat), {KILLS} kills")
    server = floe_server_factory(interval_seconds=1)
    records, kills, load_seconds = _run_crash_loop(server, seed=seed, use_keys=True)
    _check(server, records, seed=seed, kills=kills, load_seconds=load_seconds, use_keys=True)


def test_crash_loop_on_an_s3_warehouse(floe_server_factory, tmp_path_factory):
    """Variant 1 once more with the warehouse on a real S3 server on loopback (`floe_e2e.s3`):
    data, manifests and metadata go to the bucket while floe is killed mid-upload and mid-commit."""
    from floe_e2e.s3 import S3Server, floe_s3_kwargs

    s3 = S3Server(tmp_path_factory.mktemp("s3"))
    s3.start()
    try:
        seed = _seed()
        print(f"\ncrash loop (S3 warehouse) seed: {seed} (FLOE_CRASH_SEED={seed} to repeat), {KILLS} kills")
        server = floe_server_factory(interval_seconds=1, **floe_s3_kwargs(s3))
        records, kills, load_seconds = _run_crash_loop(server, seed=seed, use_keys=False)
        _check(server, records, seed=seed, kills=kills, load_seconds=load_seconds, use_keys=False)
        assert s3.objects("floe/analytics/events/data/"), "the data files are in the bucket"
    finally:
        s3.stop()
