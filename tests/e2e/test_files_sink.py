"""Files sink (`type = "files"`, docs/config.md "Files sinks"; docs/design.md "Files sinks:
publishing exactly once"): NDJSON (gzip or not) and Parquet files under Hive-style folders,
named as configured, read back with gzip+json, pyarrow and DuckDB (`read_json_auto` /
`read_parquet` with `hive_partitioning`) — every row exactly once, every path as configured,
nothing visible under another name outside `_floe/`. Then a kill -9 loop under load: every
acknowledged id is in exactly one published file.

The sink's folder comes from the `files_target` fixture: a local folder (relative to the server's
folder), or `s3://warehouse/…` on a real S3 server on loopback; the tests read only through
`Files`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import pathlib
import random
import re
import threading
import time

import pyarrow.parquet as pq
import pytest

from floe_e2e.config import STREAM, files_sink_toml
from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, try_post_events
from floe_e2e.server import run_floe, wait_until

SINK = "files_out"
PIPELINE = "events_to_files"
SQL = f"INSERT INTO {SINK} SELECT id, ns, type, ts, data, seq FROM {STREAM}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
SEQ = r"\d{20}"
UTC = dt.timezone.utc


@dataclasses.dataclass
class Files:
    """The files of a files sink's folder, local: `config_path` is what floe.toml says."""

    config_path: str
    root: pathlib.Path
    #: floe.toml lines the sink's storage needs (`[catalog.s3]` for the S3 variant).
    toml: str = ""

    def all(self) -> list[str]:
        """Every regular file below the folder, relative, sorted (`_floe/…` included)."""
        if not self.root.exists():
            return []
        found = (p.relative_to(self.root) for p in self.root.rglob("*") if p.is_file())
        # s3s-fs keeps uploads in progress in dot-folders of its own.
        return sorted(str(p) for p in found if not any(part.startswith(".") for part in p.parts))

    def published(self) -> list[str]:
        return [f for f in self.all() if not f.startswith("_floe/")]

    def staged(self) -> list[str]:
        return [f for f in self.all() if f.startswith("_floe/")]

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def glob(self, pattern: str) -> str:
        """A glob for DuckDB over the published files (`**/*.json.gz`)."""
        return str(self.root / pattern)


@pytest.fixture(params=["local", "s3"])
def files_target(request, tmp_path, tmp_path_factory):
    """`make(name) -> Files`: where the files sink writes (see the module docs): a local folder,
    or `s3://warehouse/<name>` on a real S3 server on loopback (`floe_e2e.s3`), read back from
    the store's own folder."""
    if request.param == "local":
        def make(name: str = "exports/events") -> Files:
            return Files(config_path=name, root=tmp_path / name)
        yield make
        return
    from floe_e2e.s3 import BUCKET, S3Server, catalog_s3_toml

    s3 = S3Server(tmp_path_factory.mktemp("s3"))
    s3.start()

    def make_s3(name: str = "exports/events") -> Files:
        return Files(config_path=f"s3://{BUCKET}/{name}", root=s3.data / BUCKET / name,
                     toml=catalog_s3_toml(s3))
    try:
        yield make_s3
    finally:
        s3.stop()


def rows_of(files: Files, rel: str) -> list[dict]:
    """The rows of one published file (NDJSON, gzip NDJSON or Parquet)."""
    data = files.read(rel)
    if data[:4] == b"PAR1":
        import io
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if rel.endswith(".gz"):
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.decode().splitlines()]


def as_utc(v) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v.astimezone(UTC) if v.tzinfo else v.replace(tzinfo=UTC)
    return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone(UTC)


def spread_events(prefix: str, n: int, *, hours: int) -> list[dict]:
    """`n` events whose `ts` step `hours` apart (so they cross folders)."""
    base = dt.datetime(2025, 12, 30, 20, 0, 0, tzinfo=UTC)
    events = make_events(prefix, n)
    for i, e in enumerate(events):
        e["ts"] = (base + dt.timedelta(hours=hours * i, milliseconds=i)).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
    return events


def published_ids(files: Files) -> list[str]:
    return [r["id"] for f in files.published() for r in rows_of(files, f)]


def wait_for_file_ids(files: Files, ids: set[str], timeout: float = 60.0) -> list[str]:
    def have():
        got = published_ids(files)
        return got if ids <= set(got) else None
    return wait_until(have, timeout, f"{len(ids)} ids in the files of {files.root}")


def check_names(files: Files, pattern: str) -> list[re.Match]:
    """Every published file matches `pattern` (a regex over the relative path); nothing else
    (temporary or partial files) is outside `_floe/`."""
    matches = []
    for f in files.published():
        m = re.fullmatch(pattern, f)
        assert m, f"{f!r} does not match {pattern!r}; published: {files.published()}"
        matches.append(m)
    return matches


def test_json_gzip_event_time_default_folders_uuid_names(floe_server_factory, files_target, duckdb_con):
    files = files_target()
    server = floe_server_factory(extra=files.toml + files_sink_toml(
        SINK, files.config_path, PIPELINE, SQL, time_column="ts", file_prefix="ev-"))
    events = spread_events("j", 120, hours=1)  # 5 days
    assert_accepted(server.post_events(events[:70]), 70)
    assert_accepted(server.post_events(events[70:]), 50)
    ids = {e["id"] for e in events}
    wait_for_file_ids(files, ids)
    server.stop()

    got = published_ids(files)
    assert sorted(got) == sorted(ids), "every row exactly once"
    matches = check_names(files, rf"year=(\d{{4}})/month=(\d\d)/day=(\d\d)/ev-{UUID}\.json\.gz")
    for m in matches:
        for row in rows_of(files, m.group(0)):
            ts = as_utc(row["ts"])
            assert (ts.year, ts.month, ts.day) == tuple(map(int, m.groups())), (m.group(0), row)
            assert set(row) == {"id", "ns", "type", "ts", "data", "seq"}
    assert len({m.groups() for m in matches}) == 6, "2025-12-30 20:00 + 119 h spans 6 days"
    assert files.staged() == [], "nothing left in _floe/ after a clean stop"

    t = duckdb_con.execute(
        f"SELECT id, ts, year, month, day FROM read_json_auto('{files.glob('**/*.json.gz')}', "
        "hive_partitioning = true) ORDER BY id").fetchall()
    assert sorted(r[0] for r in t) == sorted(ids)
    for _id, ts, year, month, day in t:
        ts = as_utc(ts if isinstance(ts, dt.datetime) else str(ts))
        assert (int(year), int(month), int(day)) == (ts.year, ts.month, ts.day)


def test_parquet_zstd_custom_folders_sequence_names(floe_server_factory, files_target, duckdb_con):
    files = files_target("out/pq")
    server = floe_server_factory(extra=files.toml + files_sink_toml(
        SINK, files.config_path, PIPELINE, SQL, format="parquet", compression="zstd(5)",
        partitioning="dt=%Y-%m-%d/hour=%H", time_column="ts", file_naming="sequence",
        file_prefix="part-", file_suffix=".zst.parquet"))
    events = spread_events("p", 60, hours=3)
    sent = set()
    for chunk in (events[:20], events[20:40], events[40:]):  # several commits
        assert_accepted(server.post_events(chunk), len(chunk))
        sent |= {e["id"] for e in chunk}
        wait_for_file_ids(files, sent)
    server.restart()  # the sequence continues after a restart
    more = spread_events("q", 10, hours=5)
    assert_accepted(server.post_events(more), 10)
    sent |= {e["id"] for e in more}
    wait_for_file_ids(files, sent)
    server.stop()

    assert sorted(published_ids(files)) == sorted(sent)
    matches = check_names(files, rf"dt=(\d{{4}}-\d\d-\d\d)/hour=(\d\d)/part-({SEQ})\.zst\.parquet")
    numbers = sorted(int(m.group(3)) for m in matches)
    assert numbers == list(range(len(numbers))), f"sequence numbers are unique and contiguous: {numbers}"
    for m in matches:
        meta = pq.ParquetFile(files.root / m.group(0)).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
        for row in rows_of(files, m.group(0)):
            ts = as_utc(row["ts"])
            assert (ts.strftime("%Y-%m-%d"), ts.strftime("%H")) == (m.group(1), m.group(2))
    assert files.staged() == []

    t = duckdb_con.execute(
        f"SELECT id, dt, hour FROM read_parquet('{files.glob('**/*.parquet')}', hive_partitioning = true)"
    ).fetchall()
    assert sorted(r[0] for r in t) == sorted(sent)
    assert {str(r[1]) for r in t} == {m.group(1) for m in matches}


def test_json_uncompressed_processing_time_flat_ulid_names(floe_server_factory, files_target):
    files = files_target("flat")
    server = floe_server_factory(extra=files.toml + files_sink_toml(
        SINK, files.config_path, PIPELINE, SQL, compression="none", partitioning="", file_naming="ulid"))
    events = make_events("u", 25)
    assert_accepted(server.post_events(events), 25)
    wait_for_file_ids(files, {e["id"] for e in events})
    server.stop()
    check_names(files, rf"{ULID}\.json")
    assert sorted(published_ids(files)) == sorted(e["id"] for e in events)
    assert files.staged() == []


def test_files_sink_config_errors_name_the_key(floe_server_factory, files_target):
    files = files_target()
    for keys, key in [
        ({"partitioning": "year=%Y/../x"}, "sinks[1].partitioning"),
        ({"file_prefix": "a/b"}, "sinks[1].file_prefix"),
        ({"compression": "zstd"}, "sinks[1].compression"),
        ({"time_column": "nope"}, "time_column"),
    ]:
        server = floe_server_factory(start=False, extra=files.toml + files_sink_toml(SINK, files.config_path, PIPELINE, SQL, **keys))
        out = run_floe("serve", "--config", server.config_path, cwd=server.workdir, timeout=60)
        text = out.stdout + out.stderr
        assert out.returncode != 0 and key in text, (keys, text[-2000:])


# --- kill -9 under load ---------------------------------------------------------------------------

KILLS = 8
CLIENTS = 2


def _client(cid: int, url: str, stop: threading.Event, acked: list, sent: list):
    n = 0
    rng = random.Random(cid)
    while not stop.is_set():
        size = rng.randint(1, 30)
        events = make_events(f"k{cid}", size, start=n)
        n += size
        sent.extend(e["id"] for e in events)
        r = try_post_events(url, events, timeout=10)
        if not isinstance(r, BaseException) and r.status == 200:
            acked.extend(e["id"] for e in events)
        time.sleep(0.01 if not isinstance(r, BaseException) else 0.05)


def test_kill9_loop_every_acknowledged_row_once_across_the_files(floe_server_factory, files_target):
    files = files_target()
    seed = random.SystemRandom().randrange(2**31)
    print(f"\nfiles sink kill -9 loop seed {seed}")
    rng = random.Random(seed)
    server = floe_server_factory(extra=files.toml + files_sink_toml(
        SINK, files.config_path, PIPELINE, SQL, time_column="ts", file_naming="sequence",
        partitioning="day=%d/minute=%M"))
    stop = threading.Event()
    acked: list[list] = [[] for _ in range(CLIENTS)]
    sent: list[list] = [[] for _ in range(CLIENTS)]
    threads = [threading.Thread(target=_client, args=(c, server.url, stop, acked[c], sent[c]), daemon=True)
               for c in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.2) if rng.random() < 0.25 else rng.uniform(0.3, 2.5))
            server.kill9()
            time.sleep(rng.uniform(0.0, 0.2))
            server.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    acked_ids = {i for a in acked for i in a}
    sent_ids = {i for s in sent for i in s}
    assert acked_ids, "premise: some request was acknowledged"
    wait_for_file_ids(files, acked_ids, timeout=90)
    server.stop()

    got = published_ids(files)
    counts: dict[str, int] = {}
    for i in got:
        counts[i] = counts.get(i, 0) + 1
    dupes = sorted(i for i, c in counts.items() if c > 1)
    assert not dupes, f"seed {seed}: {len(dupes)} ids in more than one row, e.g. {dupes[:5]}"
    assert acked_ids <= set(counts), f"seed {seed}: acknowledged ids missing: {sorted(acked_ids - set(counts))[:5]}"
    assert set(counts) <= sent_ids, f"seed {seed}: ids never sent: {sorted(set(counts) - sent_ids)[:5]}"
    matches = check_names(files, rf"day=\d\d/minute=\d\d/({SEQ})\.json\.gz")
    numbers = [int(m.group(1)) for m in matches]
    assert len(numbers) == len(set(numbers)), f"seed {seed}: a sequence number used twice"
    assert files.staged() == [], f"seed {seed}: staged files left after a clean stop: {files.staged()[:5]}"
    print(f"files sink kill -9 loop seed {seed}: {KILLS} kills, {len(acked_ids)} acked ids, "
          f"{len(got)} rows in {len(matches)} files")
