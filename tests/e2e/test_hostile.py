"""A hostile and a careless client against the real binary (issue 10, "Hardening").

Every route that takes a name, a location or SQL is tried with traversal (`..`, `.`, `a/b`,
`a\\b`, percent-encoded dots), absolute paths (floe's data dir, a sacrificial directory, `/`,
`/etc`), `//` and `file:` spellings, a symlink out of the warehouse, device files, a FIFO, a
huge sparse file, over-long and control-character names, write SQL, multi-member and trailing-
garbage gzip, an over-large record and abusive `Idempotency-Key`s. The contract:

- each attack answers 4xx with a clear error (the rule it broke, named), and error messages
  print no absolute host path outside floe's data dir that the client did not send itself;
- nothing outside floe's places changes: a **sacrificial directory** (`<workdir>/sacrificial`,
  next to the data dir: files, a subdir, an empty subdir) is byte-identical afterwards (paths,
  types, sizes, mtimes, sha256), and floe's own files (floe.toml, catalog.db, the stream log's
  segments, the `analytics.events` table's metadata and data files) are all still there;
- floe stays healthy: `/healthz` answers 200 `ok`, and ingest still works — every attack is
  followed by a small batch, and at the end of each test every one of them is in the table.

Anything an attack managed to create is then dropped with `purgeRequested=true` (the way a
careless admin would clean up) and the same checks run again, because a purge is where a bad
location or name turns into deleted data. Purge is only ever sent for tables whose location lies
inside this test's own temporary directory: a table that got created at `/` or `/etc` (a hole) is
dropped *without* purge and the one metadata file floe wrote there is removed by the test.

The REST catalog tests that can destroy floe's data on a vulnerable build each get their own
server (a purge of a table named `..` deletes the whole warehouse there), so one hole does not
hide the others; the rest share one server per module. The server runs with `RLIMIT_AS` capped
(`MEMORY_CAP_BYTES`), so a build that reads `/dev/zero` or a 1 GiB file whole dies instead of
eating the machine's memory; a FIFO read is bounded by `FIFO_TIMEOUT` and unblocked at the end.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import re
import resource
import shutil
import stat
import urllib.parse
import uuid

import pytest

from floe_e2e.config import CATALOG_NAME
from floe_e2e.events import make_events
from floe_e2e.http import CONNECTION_ERRORS, IDEMPOTENCY_KEY, assert_accepted, events_url, http_request
from floe_e2e.metrics import healthz
from floe_e2e.server import FloeServer, run_floe
from floe_e2e.tables import local_path, metadata_location, read_table, wait_for_ids

#: Address-space cap of the server process (see the module docstring). A debug floe serves
#: normally far below it.
MEMORY_CAP_BYTES = 4 << 30
#: How long a register of a FIFO may take to answer before it counts as a stuck worker.
FIFO_TIMEOUT = 5.0
#: Timeout of every other attack request.
ATTACK_TIMEOUT = 20.0
#: How long the "ingest still works" rows may take to be in the table.
LAND_TIMEOUT = 30.0
#: Size of the sparse file offered as table metadata: far above any sane metadata size limit.
SPARSE_BYTES = 1 << 30

NS = "hx"  # the namespace the REST attacks create their tables in
SCHEMA = {
    "type": "struct",
    "schema-id": 0,
    "fields": [{"id": 1, "name": "id", "type": "long", "required": False}],
}
SECRET = "SACRIFICIAL-SECRET-7f3a"  # content of the sacrificial files: must never be echoed

#: Names no namespace or table may have (issue 10: no `..`, `.`, `/`, `\`, control characters,
#: over-long names). `%2e%2e` is a literal name here (in a JSON body): a location built from it
#: becomes `..` as soon as anything URL-decodes it.
BAD_NAMES = [
    ("dotdot", ".."),
    ("dot", "."),
    ("slash", "a/b"),
    ("backslash", "a\\b"),
    ("encoded_dotdot", "%2e%2e"),
    ("encoded_slash", "a%2Fb"),
    ("control", "a\x01b"),
    ("newline", "a\nb"),
    ("nul", "a\x00b"),
    ("long", "n" * 10_000),
]


# --- snapshots and checks -------------------------------------------------------------------


def tree_snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Every entry under `root` (root included, symlinks not followed): type, size, mtime, sha256."""
    snap: dict[str, tuple] = {}
    if not os.path.lexists(root):
        return snap
    entries = [root]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        entries += [pathlib.Path(dirpath, n) for n in dirnames + filenames]
    for p in entries:
        st = os.lstat(p)
        rel = str(p.relative_to(root)) if p != root else "."
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            snap[rel] = ("file", st.st_size, st.st_mtime_ns, digest)
        elif stat.S_ISLNK(st.st_mode):
            snap[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            snap[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            snap[rel] = ("other", st.st_mode)
    return snap


def snapshot_diff(before: dict, after: dict) -> str:
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = []
    if gone:
        parts.append(f"deleted {gone[:8]}")
    if new:
        parts.append(f"created {new[:8]}")
    if changed:
        parts.append(f"changed {changed[:8]}")
    return "; ".join(parts)


def make_sacrificial(root: pathlib.Path) -> None:
    """The directory that must survive every attack: files, a subdir, an empty subdir, and a
    file named like table metadata."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text(f"{SECRET}\nkeep me\n")
    (root / "blob.bin").write_bytes(os.urandom(4096))
    (root / "sub" / "data.csv").write_text(f"a,b\n1,{SECRET}\n")
    (root / "sub" / "deeper" / "00000-keep.metadata.json").write_text('{"not": "metadata"}')


_PATH_TOKEN = re.compile(r"(?<![A-Za-z0-9_.%\-])(?:file:/*)?(/[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]*)*)")


def foreign_paths(text: str, server: FloeServer, sent: str) -> list[str]:
    """Absolute host paths in `text` that are neither under floe's data dir (nor one of its
    ancestors, which the data dir's own path reveals anyway) nor literally sent by the client.
    Route paths (`/v1/…`, `/iceberg/…`) are not host paths."""
    data_dir = str(server.data_dir.resolve())
    out = []
    for m in _PATH_TOKEN.finditer(text):
        p = m.group(1).rstrip("/.") or "/"
        if p.startswith(("/v1/", "/iceberg/", "/healthz", "/metrics")) or p in ("/v1", "/iceberg"):
            continue
        if p == data_dir or p.startswith(data_dir + "/") or data_dir.startswith(p + "/"):
            continue
        if p in sent or m.group(0) in sent:
            continue
        out.append(p)
    return out


def error_message(resp) -> str:
    """`error.message` of a floe or REST error body, else the raw body text."""
    try:
        body = json.loads(resp.body)
    except ValueError:
        return resp.body.decode("utf-8", "replace")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return resp.body.decode("utf-8", "replace")


class Hostile:
    """One server under attack, its sacrificial directory and what must survive.

    `check(what)` returns the problems found after an attack (an empty list when all is well):
    the sacrificial dir changed, one of floe's files vanished, `/healthz` not 200 `ok`, or a
    small ingest batch not accepted. `problems` collects the failures of the whole test;
    `finish()` waits for every ingest batch of the test to land and fails the test with all of
    them.
    """

    def __init__(self, server: FloeServer):
        self.server = server
        self.workdir = server.workdir.resolve()
        self.data_dir = server.data_dir.resolve()
        self.warehouse = server.warehouse.resolve()
        self.sacrificial = self.workdir / "sacrificial"
        if not self.sacrificial.exists():
            make_sacrificial(self.sacrificial)
        self.problems: list[str] = []
        self.alive_ids: list[str] = []
        self.broken = False
        self._n = 0
        self.created: list[tuple[str, str]] = []  # (namespace path, table) to drop at the end
        self.created_namespaces: list[str] = []  # namespaces (path form) an attack created
        self.outside_files: list[pathlib.Path] = []  # files a hole made outside the sandbox
        cap_memory(server)
        self._ensure_events_table()
        self._namespace(NS)
        self.baseline()

    # -- setup

    def _ensure_events_table(self) -> None:
        """The first batch, landed, so analytics.events and its files exist to be protected."""
        if self.server.catalog_db.exists():
            try:
                read_table(self.server)
                return
            except Exception:  # not created yet
                pass
        self.alive()
        wait_for_ids(self.server, self.alive_ids, timeout=LAND_TIMEOUT)

    def _namespace(self, name: str) -> None:
        r = self.rest("POST", "/namespaces", {"namespace": [name]})
        assert r.status in (200, 409), f"creating namespace {name}: {r.status} {r.body[:300]!r}"

    def baseline(self) -> None:
        """Takes the snapshots the checks compare against (after a test's own setup)."""
        self.sacrificial_snap = tree_snapshot(self.sacrificial)
        self.config_snap = tree_snapshot(self.server.config_path)
        self.floe_files = self._floe_files()

    def _floe_files(self) -> dict[pathlib.Path, int]:
        """floe's files that must never vanish, with their size (segments only grow)."""
        files = [self.server.config_path, self.server.catalog_db]
        streams = self.data_dir / "streams"
        for d in sorted(streams.iterdir()) if streams.is_dir() else []:
            files += [d / "LOCK", *sorted(d.glob("*.log"))]
        table_dir = self.warehouse / "analytics" / "events"
        files += sorted(table_dir.rglob("*.parquet")) + sorted((table_dir / "metadata").glob("*"))
        files.append(local_path(metadata_location(self.server)))
        return {p: p.stat().st_size for p in files if p.exists()}

    # -- requests

    def rest(self, method: str, path: str, body=None, timeout: float = ATTACK_TIMEOUT, raw: bytes | None = None):
        """A REST catalog call: `path` after `/iceberg/v1/{prefix}`."""
        url = f"{self.server.url}/iceberg/v1/{CATALOG_NAME}{path}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        return http_request(method, url, data, {"Content-Type": "application/json"}, timeout=timeout)

    def alive(self) -> None:
        """Ingest still works: a small batch is accepted (it must land by `finish`)."""
        self._n += 1
        events = make_events(f"alive-{self._n:03d}", 2)
        resp = self.server.post_events(events, timeout=ATTACK_TIMEOUT)
        assert_accepted(resp, 2)
        self.alive_ids += [e["id"] for e in events]

    # -- checks

    def check(self, what: str) -> list[str]:
        """Everything that must hold after an attack; records and returns the problems."""
        if self.broken:
            return []
        found = []
        now = tree_snapshot(self.sacrificial)
        if now != self.sacrificial_snap:
            found.append(f"{what}: the sacrificial dir changed: {snapshot_diff(self.sacrificial_snap, now)}")
            self.sacrificial_snap = now  # report each attack's own damage once
        if tree_snapshot(self.server.config_path) != self.config_snap:
            found.append(f"{what}: floe.toml changed or vanished")
        missing = [str(p.relative_to(self.workdir)) for p, size in self.floe_files.items()
                   if not p.exists() or p.stat().st_size < size]
        if missing:
            found.append(f"{what}: floe's files vanished or shrank: {missing[:8]}")
            self.broken = True
        try:
            status, body = healthz(self.server)
            if status != 200 or body.get("status") != "ok":
                found.append(f"{what}: /healthz {status} {body}")
        except CONNECTION_ERRORS as e:
            found.append(f"{what}: /healthz did not answer ({e!r}); server running: {self.server.running}")
            self.broken = True
        if not self.broken:
            try:
                self.alive()
            except (AssertionError, *CONNECTION_ERRORS) as e:
                found.append(f"{what}: ingest no longer works: {e}")
                self.broken = True
        self.problems += found
        return found

    def expect_4xx(self, what: str, resp, *, sent: str = "", rule: str | None = None,
                   need_message: bool = True) -> bool:
        """Records a problem unless `resp` is a 4xx whose message is clear (names `rule`, a
        regex, when given) and prints no foreign host path. True when it was a 4xx.
        `need_message=False` for requests the HTTP layer refuses before any floe handler runs
        (an unroutable path, a header value with control characters): hyper answers those
        with an empty body."""
        msg = error_message(resp)
        if not 400 <= resp.status < 500:
            self.problems.append(f"{what}: want 4xx, got {resp.status}: {msg[:300]!r}")
            return False
        if not msg.strip() and need_message:
            self.problems.append(f"{what}: {resp.status} without an error message: {resp.body[:200]!r}")
        elif msg.strip() and rule is not None and not re.search(rule, msg, re.I):
            self.problems.append(f"{what}: {resp.status}, but the message does not name the rule /{rule}/: {msg[:300]!r}")
        self.no_foreign_paths(what, resp, sent)
        return True

    def no_foreign_paths(self, what: str, resp, sent: str) -> None:
        text = resp.body.decode("utf-8", "replace")
        leaked = foreign_paths(text, self.server, sent)
        if leaked:
            self.problems.append(f"{what}: the answer prints host paths the client did not send: {leaked[:4]}")
        if SECRET in text:
            self.problems.append(f"{what}: the answer echoes the content of a sacrificial file")

    def finish(self) -> None:
        """Every ingest batch of the test landed; then fails with every problem recorded."""
        if not self.broken and self.alive_ids:
            try:
                wait_for_ids(self.server, self.alive_ids, timeout=LAND_TIMEOUT)
            except AssertionError as e:
                self.problems.append(f"the rows ingested between the attacks did not all land: {e}")
        for p in self.outside_files:
            remove_outside_file(p)
        if self.problems:
            pytest.fail(f"{len(self.problems)} problem(s):\n- " + "\n- ".join(self.problems), pytrace=False)

    # -- cleanup of what an attack created

    def note_created(self, what: str, resp, table: str, namespace: str = NS) -> None:
        """An attack that should have been refused created a table: remember it for the purge
        phase, and note any metadata file written outside this test's directory."""
        self.created.append((namespace, table))
        try:
            loc = resp.json().get("metadata-location")
        except AssertionError:
            loc = None
        if loc:
            p = local_path(loc)
            if not is_inside(p, self.workdir):
                self.outside_files.append(p)
                self.problems.append(f"{what}: floe wrote {p} outside its places")

    def table_path(self, namespace: str, table: str) -> str:
        return f"/namespaces/{urllib.parse.quote(namespace, safe='')}/tables/{urllib.parse.quote(table, safe='')}"

    def drop_twins(self) -> None:
        """Drops, without purge, the created tables that are twins of analytics.events
        (registered from its metadata): they share its files, so purging one would delete
        floe's own table even on a correct build."""
        for namespace, table in list(self.created):
            r = self.rest("GET", self.table_path(namespace, table))
            if r.status == 200 and r.json()["metadata"]["location"].rstrip("/").endswith("/analytics/events"):
                self.rest("DELETE", self.table_path(namespace, table) + "?purgeRequested=false")
                self.created.remove((namespace, table))

    def purge_created(self) -> None:
        """Drops every table an attack created, with purge when its location lies inside this
        test's directory, else without (a purge of `/` would delete the host)."""
        for namespace, table in self.created:
            path = self.table_path(namespace, table)
            try:
                loaded = self.rest("GET", path)
                loc = loaded.json()["metadata"]["location"] if loaded.status == 200 else None
            except (AssertionError, KeyError, *CONNECTION_ERRORS):
                loc = None
            purge = loc is not None and is_inside(local_path(loc), self.workdir)
            what = f"drop {namespace}.{table[:40]!r} (location {loc!r}) with purgeRequested={purge}"
            try:
                self.rest("DELETE", f"{path}?purgeRequested={'true' if purge else 'false'}")
            except CONNECTION_ERRORS as e:
                self.problems.append(f"{what}: no answer ({e!r})")
            self.check(what)
        self.created.clear()


def is_inside(p: pathlib.Path, root: pathlib.Path) -> bool:
    """Whether `p` (absolute, symlinks resolved) lies in or under `root`."""
    if not p.is_absolute():
        return False
    try:
        resolved = pathlib.Path(os.path.realpath(p))
    except OSError:
        return False
    return resolved == root or root in resolved.parents


def remove_outside_file(p: pathlib.Path) -> None:
    """Removes a metadata file a vulnerable build wrote outside the test's directory, and its
    `metadata` folder when that is now empty. Only floe's own file names are touched."""
    if p.name.endswith(".metadata.json") and p.is_file():
        p.unlink()
        try:
            p.parent.rmdir()  # only when empty
        except OSError:
            pass


def cap_memory(server: FloeServer) -> None:
    """RLIMIT_AS on the running server: a read of /dev/zero or of a huge file aborts floe
    instead of exhausting the host's memory."""
    assert server.proc is not None
    resource.prlimit(server.proc.pid, resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


def file_uri(p: os.PathLike | str) -> str:
    return f"file://{p}"


def create_body(name: str, location: str | None = None, **extra) -> dict:
    body = {"name": name, "schema": SCHEMA, **extra}
    if location is not None:
        body["location"] = location
    return body


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def hostile(floe_server_factory):
    """A fresh server and sacrificial dir for one destructive-on-a-vulnerable-build test."""
    h = Hostile(floe_server_factory())
    yield h
    unblock_fifos(h.warehouse)
    if h.broken:
        # An attack destroyed floe's files (a hole, reported by the test): such a server may
        # spend the whole stop grace retrying commits; its shutdown is not what is tested here.
        h.server.kill9()


@pytest.fixture(scope="module")
def shared(module_floe_server_factory):
    """One server for the tests whose attacks cannot destroy floe's data even when they land."""
    return Hostile(module_floe_server_factory(limits={"max_body_bytes": 96 << 20}))


@pytest.fixture
def env(shared):
    """`shared`, re-baselined for this test (its problems are this test's own)."""
    shared.problems = []
    shared.alive_ids = []
    shared.broken = False
    shared.baseline()
    return shared


def unblock_fifos(root: pathlib.Path) -> None:
    """Opens every FIFO under `root` for writing and closes it: a reader stuck on it gets EOF, so
    a vulnerable build's stuck worker does not block the server's shutdown."""
    if not root.exists():
        return
    for dirpath, _dirs, files in os.walk(root):
        for n in files:
            p = os.path.join(dirpath, n)
            if stat.S_ISFIFO(os.lstat(p).st_mode):
                try:
                    os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # no reader: nothing is stuck
                    pass


# --- REST catalog: names ------------------------------------------------------------------------


def test_rest_names_are_checked_everywhere(hostile):
    """Namespace and table names that could become paths are refused (400 naming the rule) on
    create, stage-create, register, rename and in path parameters; anything that got created
    anyway is purged, and floe's files and the sacrificial dir survive that."""
    h = hostile
    rule = r"name|level|namespace|table"
    for label, bad in BAD_NAMES:
        sent = json.dumps(bad)
        r = h.rest("POST", "/namespaces", {"namespace": [bad]})
        if not h.expect_4xx(f"create namespace [{label}]", r, sent=sent, rule=rule):
            h.created_namespaces.append(bad)
        r = h.rest("POST", "/namespaces", {"namespace": [NS, bad]})
        if not h.expect_4xx(f"create namespace [{NS}, {label}]", r, sent=sent, rule=rule):
            h.created_namespaces.append(f"{NS}\x1f{bad}")
        r = h.rest("POST", f"/namespaces/{NS}/tables", create_body(bad))
        if not h.expect_4xx(f"create table {NS}.[{label}]", r, sent=sent, rule=rule):
            h.note_created(f"create table {NS}.[{label}]", r, bad)
        r = h.rest("POST", f"/namespaces/{NS}/tables", create_body(bad, **{"stage-create": True}))
        h.expect_4xx(f"stage-create table {NS}.[{label}]", r, sent=sent, rule=rule)
        r = h.rest("POST", f"/namespaces/{NS}/register",
                   {"name": bad, "metadata-location": metadata_location(h.server)})
        if not h.expect_4xx(f"register table {NS}.[{label}]", r, sent=sent, rule=rule):
            h.created.append((NS, bad))  # a twin of analytics.events: dropped without purge below
        h.check(f"names [{label}]")

    # The same names arriving percent-encoded in the path (decoded by the router).
    for label, encoded in [("dotdot", "%2E%2E"), ("dot", "%2E"), ("slash", "a%2Fb"), ("backslash", "a%5Cb"),
                           ("nul", "a%00b")]:
        sent = urllib.parse.unquote(encoded)
        for method, path in [
            ("GET", f"/namespaces/{encoded}"),
            ("DELETE", f"/namespaces/{encoded}"),
            ("GET", f"/namespaces/{NS}/tables/{encoded}"),
            ("DELETE", f"/namespaces/{NS}/tables/{encoded}?purgeRequested=true"),
            ("GET", f"/namespaces?parent={encoded}"),
        ]:
            r = h.rest(method, path)
            h.expect_4xx(f"{method} {path}", r, sent=sent + encoded)
        h.check(f"path names [{label}]")

    # Rename onto a bad name: the catalog row must not get a name that later becomes a path.
    assert h.rest("POST", f"/namespaces/{NS}/tables", create_body("victim")).status == 200
    for label, bad in BAD_NAMES[:5]:
        body = {"source": {"namespace": [NS], "name": "victim"}, "destination": {"namespace": [NS], "name": bad}}
        r = h.rest("POST", "/tables/rename", body)
        if not h.expect_4xx(f"rename {NS}.victim to [{label}]", r, sent=json.dumps(bad), rule=rule):
            body = {"source": {"namespace": [NS], "name": bad}, "destination": {"namespace": [NS], "name": "victim"}}
            h.rest("POST", "/tables/rename", body)  # back, for the next name
    h.check("renames")

    # Cleanup as a careless admin would: purge what got created (register twins share
    # analytics.events' files, so they are dropped without purge).
    h.drop_twins()
    h.purge_created()
    for ns in h.created_namespaces:
        h.rest("DELETE", f"/namespaces/{urllib.parse.quote(ns, safe='')}")
    h.check("cleanup")
    h.finish()


# --- REST catalog: locations ----------------------------------------------------------------


def outside_locations(h: Hostile) -> list[tuple[str, str]]:
    """(label, location) pairs that all point outside the warehouse, however they are spelled."""
    wh, sac = h.warehouse, h.sacrificial
    link = h.warehouse / "escape"
    if not os.path.lexists(link):
        link.symlink_to(sac, target_is_directory=True)
    return [
        ("data_dir", str(h.data_dir)),
        ("data_dir_uri", file_uri(h.data_dir)),
        ("streams_dir", file_uri(h.data_dir / "streams")),
        ("sacrificial", str(sac)),
        ("sacrificial_uri", file_uri(sac)),
        ("root", "/"),
        ("etc", "file:///etc"),
        ("warehouse_dotdot", f"file://{wh}/../.."),
        ("warehouse_dotdot_sac", f"file://{wh}/../../sacrificial"),
        ("warehouse_dot_dotdot", f"{wh}/./../../sacrificial"),
        ("encoded_dotdot", f"file://{wh}/%2E%2E/%2E%2E/sacrificial"),
        ("encoded_dotdot_lower", f"file://{wh}/%2e%2e/%2e%2e"),
        ("double_slash_dotdot", f"file://{wh}//..//..//sacrificial"),
        ("four_slashes", f"file:///{sac}"),
        ("localhost_host", f"file://localhost{sac}"),
        ("single_slash_uri", f"file:{sac}"),
        ("warehouse_prefix_sibling", f"{wh}-evil/t"),
        ("symlink_out", file_uri(link / "t")),
        ("symlink_itself", file_uri(link)),
    ]


def test_rest_create_table_locations_stay_inside_the_warehouse(hostile):
    """`location` on create (and on stage-create) must lie inside the warehouse after
    normalising `..`, `.`, `//`, URL encoding and symlinks: each of these is a 400 naming the
    rule. What a vulnerable build creates is purged afterwards; nothing outside may change."""
    h = hostile
    cases = outside_locations(h)
    h.baseline()  # the symlink is part of the warehouse now
    for i, (label, loc) in enumerate(cases):
        name = f"loc_{i:02d}"
        r = h.rest("POST", f"/namespaces/{NS}/tables", create_body(name, loc))
        if not h.expect_4xx(f"create with location [{label}] {loc}", r, sent=loc, rule="warehouse"):
            h.note_created(f"create with location [{label}]", r, name)
        r = h.rest("POST", f"/namespaces/{NS}/tables", create_body(f"stage_{i:02d}", loc, **{"stage-create": True}))
        h.expect_4xx(f"stage-create with location [{label}] {loc}", r, sent=loc, rule="warehouse")
        h.check(f"create with location [{label}]")
    # A location inside the warehouse still works (the rule is not "no location at all").
    inside = file_uri(h.warehouse / NS / "explicit_inside")
    r = h.rest("POST", f"/namespaces/{NS}/tables", create_body("inside", inside))
    if r.status != 200:
        h.problems.append(f"create with a location inside the warehouse: {r.status} {error_message(r)[:300]!r}")
    h.purge_created()
    h.check("purge of what got created")
    h.finish()


def assert_create_body(location: str) -> dict:
    """A staged create's commit (`assert-create`) that sets `location` (what PyIceberg's
    `create_table_transaction` sends, with the location chosen by the client)."""
    return {
        "requirements": [{"type": "assert-create"}],
        "updates": [
            {"action": "assign-uuid", "uuid": str(uuid.uuid4())},
            {"action": "upgrade-format-version", "format-version": 2},
            {"action": "add-schema", "schema": SCHEMA, "last-column-id": 1},
            {"action": "set-current-schema", "schema-id": -1},
            {"action": "add-spec", "spec": {"spec-id": 0, "fields": []}},
            {"action": "set-default-spec", "spec-id": -1},
            {"action": "add-sort-order", "sort-order": {"order-id": 0, "fields": []}},
            {"action": "set-default-sort-order", "sort-order-id": -1},
            {"action": "set-location", "location": location},
        ],
    }


def test_rest_commits_cannot_move_a_table_outside(hostile):
    """`set-location` in a table commit, in a multi-table transaction and in a staged create's
    `assert-create` commit: 400 naming the rule for every outside location; a purge afterwards
    leaves the sacrificial dir and floe's files alone."""
    h = hostile
    cases = [c for c in outside_locations(h) if c[0] not in ("root", "etc")]
    h.baseline()
    assert h.rest("POST", f"/namespaces/{NS}/tables", create_body("mover")).status == 200
    # The staged create's commit shape works with a location inside the warehouse.
    ok = h.rest("POST", f"/namespaces/{NS}/tables/staged_ok", assert_create_body(file_uri(h.warehouse / NS / "so")))
    assert ok.status == 200, f"assert-create commit inside the warehouse: {ok.status} {ok.body[:500]!r}"
    for i, (label, loc) in enumerate(cases):
        move = {"requirements": [], "updates": [{"action": "set-location", "location": loc}]}
        r = h.rest("POST", f"/namespaces/{NS}/tables/mover", move)
        if not h.expect_4xx(f"commit set-location [{label}] {loc}", r, sent=loc, rule="warehouse"):
            # Moved: the table's next purge would act on `loc`. Move it back for the next case,
            # remembering a twin at the bad place for the purge phase.
            h.rest("POST", "/tables/rename", {"source": {"namespace": [NS], "name": "mover"},
                                              "destination": {"namespace": [NS], "name": f"moved_{i:02d}"}})
            h.created.append((NS, f"moved_{i:02d}"))
            assert h.rest("POST", f"/namespaces/{NS}/tables", create_body("mover")).status == 200
        tx = {"table-changes": [{"identifier": {"namespace": [NS], "name": "mover"}, **move}]}
        r = h.rest("POST", "/transactions/commit", tx)
        if not h.expect_4xx(f"transaction set-location [{label}] {loc}", r, sent=loc, rule="warehouse"):
            h.rest("POST", "/tables/rename", {"source": {"namespace": [NS], "name": "mover"},
                                              "destination": {"namespace": [NS], "name": f"txmoved_{i:02d}"}})
            h.created.append((NS, f"txmoved_{i:02d}"))
            assert h.rest("POST", f"/namespaces/{NS}/tables", create_body("mover")).status == 200
        r = h.rest("POST", f"/namespaces/{NS}/tables/staged_{i:02d}", assert_create_body(loc))
        if not h.expect_4xx(f"assert-create commit with set-location [{label}] {loc}", r, sent=loc, rule="warehouse"):
            h.note_created(f"assert-create with location [{label}]", r, f"staged_{i:02d}")
        h.check(f"commits with location [{label}]")
    h.purge_created()
    h.finish()


def test_rest_namespace_location_cannot_place_tables_outside(hostile):
    """A namespace `location` property outside the warehouse is refused, or at least never
    used: a table created in that namespace without a location lies inside the warehouse, and
    purging it leaves the sacrificial dir alone."""
    h = hostile
    sac = str(h.sacrificial)
    r = h.rest("POST", "/namespaces", {"namespace": ["nsloc"], "properties": {"location": sac}})
    refused_create = 400 <= r.status < 500
    if refused_create:
        h.expect_4xx("create namespace with location outside", r, sent=sac, rule="warehouse")
        assert h.rest("POST", "/namespaces", {"namespace": ["nsloc"]}).status == 200
    r = h.rest("POST", "/namespaces/nsloc/properties", {"updates": {"location": file_uri(h.sacrificial)}})
    if 400 <= r.status < 500:
        h.expect_4xx("set namespace location outside", r, sent=file_uri(h.sacrificial), rule="warehouse")
    r = h.rest("POST", "/namespaces/nsloc/tables", create_body("t"))
    if r.status == 200:
        loc = r.json()["metadata"]["location"]
        if not is_inside(local_path(loc), h.warehouse):
            h.problems.append(f"a table in a namespace with an outside location property was placed at {loc}")
        h.created.append(("nsloc", "t"))
    h.check("namespace location")
    h.purge_created()
    h.finish()


# --- REST catalog: register and metadata reads --------------------------------------------------


def test_rest_register_reads_only_regular_files_inside_the_warehouse(hostile):
    """register's `metadata-location` must be a regular file inside the warehouse, below the
    metadata size limit, read without blocking a worker: `/etc/passwd`, a directory, a valid
    metadata file outside the warehouse, a 1 GiB sparse file, a FIFO and `/dev/zero` are each a
    4xx, answered promptly, and floe stays healthy."""
    h = hostile
    spot = h.warehouse / NS
    spot.mkdir(parents=True, exist_ok=True)
    sparse = spot / "00000-sparse.metadata.json"
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_BYTES)  # sparse: no bytes written
    fifo = spot / "00000-fifo.metadata.json"
    os.mkfifo(fifo)
    outside_copy = h.sacrificial / "sub" / "00001-copy.metadata.json"
    shutil.copyfile(local_path(metadata_location(h.server)), outside_copy)
    h.baseline()
    cases = [
        ("etc_passwd", "/etc/passwd", "warehouse"),
        ("etc_passwd_uri", "file:///etc/passwd", "warehouse"),
        ("directory", file_uri(h.warehouse / "analytics"), r"regular file|directory|not a file"),
        ("outside_valid_metadata", file_uri(outside_copy), "warehouse"),
        ("outside_via_dotdot", f"file://{h.warehouse}/../../sacrificial/sub/00001-copy.metadata.json", "warehouse"),
        ("outside_via_symlink", file_uri(_link_to(h, outside_copy)), "warehouse"),
        ("sparse_1gib", file_uri(sparse), r"limit|too large|bytes"),
        ("fifo", file_uri(fifo), r"regular file|fifo|not a file"),
        ("dev_zero", "/dev/zero", r"warehouse|regular file"),
        ("dev_zero_uri", "file:///dev/zero", r"warehouse|regular file"),
    ]
    h.baseline()
    for i, (label, loc, rule) in enumerate(cases):
        name = f"reg_{i:02d}"
        timeout = FIFO_TIMEOUT if label == "fifo" else ATTACK_TIMEOUT
        try:
            r = h.rest("POST", f"/namespaces/{NS}/register", {"name": name, "metadata-location": loc}, timeout=timeout)
        except CONNECTION_ERRORS as e:
            h.problems.append(f"register [{label}] {loc}: no answer within {timeout}s ({e!r}): a stuck or dead worker")
            if label == "fifo":
                unblock_fifos(spot)
        else:
            if not h.expect_4xx(f"register [{label}] {loc}", r, sent=loc, rule=rule):
                h.created.append((NS, name))
        found = h.check(f"register [{label}]")
        if h.broken:
            h.problems.append(f"stopped after register [{label}]: the server is broken ({found})")
            break
    h.drop_twins()
    h.purge_created()
    h.finish()


def _link_to(h: Hostile, target: pathlib.Path) -> pathlib.Path:
    link = h.warehouse / NS / "00002-link.metadata.json"
    if not os.path.lexists(link):
        link.symlink_to(target)
    return link


# --- REST catalog: purge ----------------------------------------------------------------------


def test_purge_deletes_only_the_files_the_table_references(hostile):
    """A purge deletes the table's own files (its data files are gone afterwards) and nothing
    else under its location: not a file someone put there, not the files of another table whose
    location lies below it."""
    import pyarrow as pa
    from pyiceberg.catalog.rest import RestCatalog

    h = hostile
    outer_loc = h.warehouse / NS / "outer"
    r = h.rest("POST", f"/namespaces/{NS}/tables", create_body("outer", file_uri(outer_loc)))
    assert r.status == 200, f"create outer: {r.status} {r.body[:300]!r}"
    cat = RestCatalog(CATALOG_NAME, uri=f"{h.server.url}/iceberg")
    cat.load_table(f"{NS}.outer").append(pa.table({"id": pa.array([1, 2, 3], pa.int64())}))
    outer_data = sorted(outer_loc.rglob("*.parquet"))
    assert outer_data, "PyIceberg's append wrote no data file under the table's location"
    inner = h.rest("POST", f"/namespaces/{NS}/tables", create_body("inner", file_uri(outer_loc / "inner")))
    inner_files: dict = {}
    if inner.status == 200:
        cat.load_table(f"{NS}.inner").append(pa.table({"id": pa.array([9], pa.int64())}))
        inner_files = tree_snapshot(outer_loc / "inner")
    else:  # refusing a location inside another table's is a valid way to protect it
        h.expect_4xx("create inner (location inside another table's)", inner, sent=str(outer_loc))
    stray = outer_loc / "README-not-floe.txt"
    stray.write_text("not referenced by any metadata\n")
    h.baseline()
    r = h.rest("DELETE", f"/namespaces/{NS}/tables/outer?purgeRequested=true")
    if r.status != 204:
        h.problems.append(f"purge of a plain table: {r.status} {error_message(r)[:300]!r}")
    left = [str(p.relative_to(outer_loc)) for p in outer_data if p.exists()]
    if left:
        h.problems.append(f"purge left the table's own data files: {left}")
    if not stray.exists():
        h.problems.append("purge deleted a file under the table's location that its metadata does not reference")
    if inner_files:
        now = tree_snapshot(outer_loc / "inner")
        if now != inner_files:
            h.problems.append(f"purge of outer changed table inner's files: {snapshot_diff(inner_files, now)}")
        else:
            got = cat.load_table(f"{NS}.inner").scan().to_arrow().column("id").to_pylist()
            if got != [9]:
                h.problems.append(f"inner reads {got} after outer's purge, want [9]")
    h.check("purge of outer")
    h.finish()


# --- SQL: read-only -----------------------------------------------------------------------------


def write_sql(h: Hostile) -> list[tuple[str, str]]:
    sac = h.sacrificial
    return [
        ("copy_to_file", f"COPY (SELECT 1 AS x) TO '{sac}/x.csv'"),
        ("copy_to_parquet", f"COPY (SELECT 1 AS x) TO '{sac}/sub/x.parquet' STORED AS PARQUET"),
        ("copy_table_over_file", f"COPY analytics.events TO '{sac}/notes.txt' STORED AS CSV"),
        ("copy_into_data_dir", f"COPY (SELECT 1 AS x) TO '{h.data_dir}/streams/x.csv'"),
        ("create_external", f"CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{sac}/..'"),
        ("create_table_as", "CREATE TABLE analytics.copy AS SELECT * FROM analytics.events"),
        ("insert", "INSERT INTO analytics.events (ns, type, id, ts) "
                   "VALUES ('x', 'y', 'sql-insert-1', TIMESTAMP '2025-01-01 00:00:00')"),
        ("drop_table", "DROP TABLE analytics.events"),
        ("set", "SET datafusion.execution.target_partitions = 1"),
        ("set_information_schema", "SET datafusion.catalog.information_schema = false"),
        ("two_statements", f"SELECT 1; COPY (SELECT 1 AS x) TO '{sac}/two.csv'"),
    ]


def test_query_endpoint_is_read_only(env):
    """POST /v1/query: every write or session-changing statement is a 400 saying queries are
    read-only, and no file appears or changes; reading a host file by path is an error too."""
    h = env
    for label, sql in write_sql(h):
        body = json.dumps({"sql": sql}).encode()
        r = http_request("POST", f"{h.server.url}/v1/query", body, {"Content-Type": "application/json"},
                         timeout=ATTACK_TIMEOUT)
        h.expect_4xx(f"POST /v1/query [{label}] {sql}", r, sent=sql, rule=r"read[- ]only")
        h.check(f"POST /v1/query [{label}]")
    for label, sql in [
        ("select_file", f"SELECT * FROM '{h.sacrificial}/sub/data.csv'"),
        ("select_etc", "SELECT * FROM '/etc/passwd'"),
    ]:
        body = json.dumps({"sql": sql}).encode()
        r = http_request("POST", f"{h.server.url}/v1/query", body, {"Content-Type": "application/json"},
                         timeout=ATTACK_TIMEOUT)
        h.expect_4xx(f"POST /v1/query [{label}] {sql}", r, sent=sql)
        if b"root:" in r.body:
            h.problems.append(f"POST /v1/query [{label}]: the answer holds /etc/passwd's content")
        h.check(f"POST /v1/query [{label}]")
    # POST /v1/validate_sql plans pipeline SQL only: write SQL is an error there too.
    for label, sql in write_sql(h)[:2]:
        r = http_request("POST", f"{h.server.url}/v1/validate_sql", json.dumps({"sql": sql}).encode(),
                         {"Content-Type": "application/json"}, timeout=ATTACK_TIMEOUT)
        h.expect_4xx(f"POST /v1/validate_sql [{label}]", r, sent=sql)
        h.check(f"POST /v1/validate_sql [{label}]")
    # A plain read still works, and the INSERT above added nothing.
    r = http_request("POST", f"{h.server.url}/v1/query",
                     json.dumps({"sql": "SELECT count(*) AS n FROM analytics.events WHERE id = 'sql-insert-1'"}).encode(),
                     {"Content-Type": "application/json"}, timeout=ATTACK_TIMEOUT)
    if r.status != 200 or r.json()["rows"] != [{"n": 0}]:
        h.problems.append(f"after the write SQL, SELECT count(*) of the inserted id: {r.status} {r.body[:300]!r}")
    h.finish()


def test_floe_sql_cli_is_read_only(env):
    """`floe sql` (on the catalog file, no server involved): write SQL exits non-zero saying
    queries are read-only, and writes nothing."""
    h = env
    for label, sql in [c for c in write_sql(h) if c[0] in ("copy_to_file", "copy_table_over_file", "insert", "set",
                                                           "create_external")]:
        res = run_floe("sql", sql, "--config", h.server.config_path, "--format", "json", cwd=h.server.workdir)
        out = res.stdout + res.stderr
        if res.returncode == 0:
            h.problems.append(f"floe sql [{label}] {sql}: exit 0: {out[-300:]!r}")
        elif not re.search(r"read[- ]only", out, re.I):
            h.problems.append(f"floe sql [{label}]: exit {res.returncode}, but no 'read-only' in: {out[-300:]!r}")
        h.check(f"floe sql [{label}]")
    h.finish()


# --- lookups ------------------------------------------------------------------------------------


def test_lookup_table_names_cannot_traverse(env):
    """GET /v1/tables/{table}/rows with traversal and odd names: 4xx, nothing leaks."""
    h = env
    for raw in ["..%2Fx", "../../etc", "..", "%2E%2E.%2E%2E", "analytics.%2E%2E", "analytics%2F..%2F..%2Fx.events",
                "x%2Fy.events", "analytics.events%00", "a%5Cb.c", "n" * 10_000 + ".t"]:
        url = f"{h.server.url}/v1/tables/{raw}/rows?id=x"
        r = http_request("GET", url, timeout=ATTACK_TIMEOUT)
        # `../../etc` spans path segments: no route matches, the router answers a bare 404.
        h.expect_4xx(f"GET /v1/tables/{raw[:40]}/rows", r, sent=urllib.parse.unquote(raw) + raw,
                     need_message="/" not in raw)
    h.check("lookups")
    h.finish()


# --- ingest -------------------------------------------------------------------------------------


def test_ingest_stream_names_cannot_traverse(env):
    """POST /v1/streams/{stream}/events with traversal stream names: 404 or 400, nothing
    stored anywhere."""
    h = env
    body = json.dumps(make_events("trav", 2)).encode()
    for raw in ["..%2Fevents", "..", "%2E%2E", "events%2F..%2F..%2Fcatalog.db", "..%2F..%2Fsacrificial",
                "events%00", "events%2F", "%2Fetc", "n" * 10_000]:
        url = f"{h.server.url}/v1/streams/{raw}/events"
        r = http_request("POST", url, body, {"Content-Type": "application/json"}, timeout=ATTACK_TIMEOUT)
        if r.status not in (400, 404):
            h.problems.append(f"POST {url[:120]}: want 404 or 400, got {r.status} {r.body[:200]!r}")
        h.no_foreign_paths(f"POST /v1/streams/{raw[:40]}/events", r, urllib.parse.unquote(raw) + raw)
    h.check("stream names")
    _assert_never_stored(h, "trav")
    h.finish()


def _assert_never_stored(h: Hostile, prefix: str) -> None:
    """No row whose id starts with `prefix` is in the table (checked after `finish`'s rows
    landed, so anything acknowledged before them would be there too)."""
    if h.broken or not h.alive_ids:
        return
    wait_for_ids(h.server, h.alive_ids, timeout=LAND_TIMEOUT)
    ids = read_table(h.server).column("id").to_pylist()
    stored = sorted(i for i in ids if i.startswith(prefix))
    if stored:
        h.problems.append(f"rows of refused requests were stored: {stored[:5]}")


def test_gzip_multi_member_and_trailing_garbage(env):
    """A body of two gzip members is read whole (both members' rows land, not just the first);
    gzip followed by garbage is a 400 and nothing of it is stored."""
    h = env
    first, second = make_events("gz-m1", 3), make_events("gz-m2", 4)
    body = gzip.compress(_ndjson(first)) + gzip.compress(_ndjson(second))
    r = _post_gzip(h, body)
    got = r.json().get("accepted") if r.status == 200 else None
    if got != 7:
        h.problems.append(f"two gzip members of 3 + 4 rows: want 200 accepted 7, got {r.status} {r.body[:300]!r}")
    elif not h.broken:
        h.alive_ids += [e["id"] for e in first + second]  # all seven must land
    h.check("gzip with two members")

    garbage = make_events("gz-garbage", 3)
    for label, tail in [("text", b"this is not gzip"), ("zeros", b"\0" * 64), ("half_member", gzip.compress(b"x")[:7])]:
        r = _post_gzip(h, gzip.compress(_ndjson(garbage)) + tail)
        h.expect_4xx(f"gzip + trailing garbage [{label}]", r, rule="gzip|trailing|encoding")
        h.check(f"gzip + trailing garbage [{label}]")
    _assert_never_stored(h, "gz-garbage")
    h.finish()


def _ndjson(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _post_gzip(h: Hostile, body: bytes):
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    return http_request("POST", events_url(h.server.url), body, headers, timeout=ATTACK_TIMEOUT)


def test_over_large_record_is_413_naming_the_limit(env):
    """A valid request (every row under `limits.max_row_bytes`, the body under
    `limits.max_body_bytes`, raised to 96 MiB for this module) whose rows make one log record
    over the stream's record size limit (64 MiB) is a 413 naming that limit, and nothing is
    stored."""
    h = env
    rows = make_events("big-record", 75)
    for r in rows:
        r["data"] = "x" * 1_000_000  # one row: ~1 MB of JSON, under max_row_bytes (1 MiB)
    body = gzip.compress(_ndjson(rows), compresslevel=1)
    resp = _post_gzip(h, body)
    msg = error_message(resp)
    if resp.status != 413:
        h.problems.append(f"a ~75 MB record: want 413, got {resp.status}: {msg[:300]!r}")
    else:
        limit = resp.json()["error"].get("limit", "")
        if limit == "limits.max_body_bytes" or not re.search(r"record", f"{limit} {msg}", re.I):
            h.problems.append(f"the 413 does not name the record size limit: limit={limit!r} message={msg[:300]!r}")
    h.no_foreign_paths("over-large record", resp, "")
    h.check("over-large record")
    _assert_never_stored(h, "big-record")
    h.finish()


def test_idempotency_key_abuse(env):
    """Over-long keys, control characters, non-ASCII bytes: 4xx, nothing stored, the stream's
    key store stays usable (a normal key right after is processed and replayed)."""
    h = env
    cases = [
        ("long_201", "k" * 201),
        ("long_10k", "k" * 10_000),
        ("control_soh", "key\x01x"),
        ("control_del", "key\x7fx"),
        ("nul", "key\x00x"),
        ("tab", "key\tx"),
        ("latin1", "key\xe9x"),
        ("empty_after_trim", "   "),
    ]
    for i, (label, key) in enumerate(cases):
        events = make_events(f"idem-bad-{i}", 2)
        try:
            r = h.server.post_events(events, headers={IDEMPOTENCY_KEY: key}, timeout=ATTACK_TIMEOUT)
        except CONNECTION_ERRORS as e:
            h.problems.append(f"Idempotency-Key [{label}]: no HTTP answer ({e!r})")
        else:
            # hyper itself refuses header values with control bytes (empty 400): floe never sees them.
            at_http_layer = label in ("control_soh", "control_del", "nul")
            h.expect_4xx(f"Idempotency-Key [{label}]", r, rule=r"idempotency", need_message=not at_http_layer)
        h.check(f"Idempotency-Key [{label}]")
    key = f"good-{uuid.uuid4()}"
    events = make_events("idem-good", 2)
    first = h.server.post_events(events, headers={IDEMPOTENCY_KEY: key})
    again = h.server.post_events(events, headers={IDEMPOTENCY_KEY: key})
    if first.status != 200 or again.status != 200 or again.json() != first.json():
        h.problems.append(f"a normal key after the abuse: {first.status} {first.body[:200]!r} / "
                          f"{again.status} {again.body[:200]!r}")
    else:
        h.alive_ids += [e["id"] for e in events]
    _assert_never_stored(h, "idem-bad")
    h.finish()
