"""Fixtures and helpers for floe's end-to-end tests.

These tests start the real `floe` binary (path in the env var FLOE_BIN), talk to it over HTTP on
127.0.0.1 only (stdlib urllib, no extra client library), and read the Iceberg tables it writes the
way an outside user would: PyIceberg's `SqlCatalog` on floe's SQLite catalog, and DuckDB's
`iceberg_scan` on the metadata file that catalog points to.

Main pieces:
- `floe_server` / `floe_server_factory`: a running `floe serve` in a temp dir (`FloeServer`).
- `floe_config(port, ...)`: the floe.toml text the server is started with (tests can vary it).
- `post_events`, `post_large`, `http_get`: the HTTP contract of DESIGN.md section 4.
- `wait_for_rows`, `read_table`, `metadata_location`, `duckdb_scan`: reading the table back.
- `duckdb_con`: a DuckDB connection with the iceberg extension loaded from the installed
  `duckdb-extension-*` wheels, without any network (see `_duckdb_extension_path`).

Every wait is bounded; no test sends traffic anywhere but 127.0.0.1.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import datetime as dt
import gzip as gzip_module
import http.client
import importlib.util
import json
import os
import pathlib
import re
import select
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable

import pytest

# --- limits (seconds) ----------------------------------------------------------------------------

#: How long `floe serve` may take to answer GET /healthz with 200.
HEALTH_TIMEOUT = 60.0
#: How long a SIGTERM-ed server may take to exit before it gets SIGKILL.
STOP_GRACE = 20.0
#: Timeout of one HTTP request.
HTTP_TIMEOUT = 30.0
#: Timeout of one CLI invocation (`floe sql`, `floe send`).
CLI_TIMEOUT = 120.0
#: Default time `wait_for_rows` waits for a row count (the sink commits every second).
ROWS_TIMEOUT = 60.0

LOOPBACK = "127.0.0.1"
STREAM = "events"
SINK = "events_table"
TABLE = "analytics.events"
CATALOG_NAME = "floe"

DEFAULT_PIPELINE_SQL = (
    "INSERT INTO events_table SELECT ns, type, id, ts, data, visibility, seq, "
    "upper(type) AS type_upper FROM events WHERE ns <> 'drop.me'"
)

#: The columns of analytics.events, as the default pipeline writes them.
TABLE_COLUMNS = ["ns", "type", "id", "ts", "data", "visibility", "seq", "type_upper"]


# --- config ----------------------------------------------------------------------------------------


#: The `fields` of the test streams (`events`, and `other` of `two_stream_extra`).
EVENT_FIELDS = """fields = [
  { name = "ns", type = "string", required = true },
  { name = "type", type = "string", required = true },
  { name = "id", type = "string", required = true },
  { name = "ts", type = "timestamp", required = true },
  { name = "data", type = "json" },
  { name = "visibility", type = "string" },
  { name = "seq", type = "int64" },
]"""


def floe_config(
    port: int,
    *,
    data_dir: str = "floe-data",
    warehouse: str = "floe-data/warehouse",
    catalog_name: str = CATALOG_NAME,
    interval_seconds: int = 1,
    partition_by: Iterable[str] = ("ns",),
    pipeline_sql: str = DEFAULT_PIPELINE_SQL,
    stream_extra: str = "",
    sink_extra: str = "",
    extra: str = "",
    limits: dict[str, Any] | None = None,
) -> str:
    """The floe.toml text for the standard test setup (keys from DESIGN.md section 3).

    `stream_extra` / `sink_extra` are extra `key = value` lines appended to the stream / sink
    tables; `extra` is appended at the end of the file (e.g. more `[[sinks]]`, or
    `two_stream_extra()`). `limits` becomes a `[limits]` table (`{"max_uncommitted_rows": 50}`);
    omitted, the file has no `[limits]` table and floe's defaults apply.
    """
    partition = ", ".join(json.dumps(p) for p in partition_by)
    limits_toml = ""
    if limits:
        limits_toml = "\n[limits]\n" + "".join(f"{k} = {_toml_scalar(v)}\n" for k, v in limits.items())
    return f"""\
[server]
listen = "{LOOPBACK}:{port}"
data_dir = {json.dumps(data_dir)}

[catalog]
name = {json.dumps(catalog_name)}
warehouse = {json.dumps(warehouse)}
{limits_toml}
[[streams]]
name = "{STREAM}"
{EVENT_FIELDS}
{stream_extra}

[[sinks]]
name = "{SINK}"
type = "iceberg"
table = "{TABLE}"
partition_by = [{partition}]
rolling = {{ interval_seconds = {interval_seconds} }}
{sink_extra}

[[pipelines]]
name = "events_to_table"
sql = {json.dumps(pipeline_sql)}
{extra}
"""


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"not a TOML scalar for [limits]: {value!r}")


#: The second stream / sink / table / pipeline that `two_stream_extra()` adds.
OTHER_STREAM = "other"
OTHER_SINK = "other_table"
OTHER_TABLE = "analytics.other"
OTHER_PIPELINE = "other_to_table"


def two_stream_extra(interval_seconds: int = 1) -> str:
    """`floe_config(extra=...)` text adding a second stream `other` (same fields as `events`),
    sink `other_table` (table analytics.other) and pipeline `other_to_table`, so a test can check
    that per-stream state (e.g. idempotency keys) is independent."""
    return f"""
[[streams]]
name = "{OTHER_STREAM}"
{EVENT_FIELDS}

[[sinks]]
name = "{OTHER_SINK}"
type = "iceberg"
table = "{OTHER_TABLE}"
partition_by = ["ns"]
rolling = {{ interval_seconds = {interval_seconds} }}

[[pipelines]]
name = "{OTHER_PIPELINE}"
sql = "INSERT INTO {OTHER_SINK} SELECT ns, type, id, ts, data, visibility, seq, upper(type) AS type_upper FROM {OTHER_STREAM}"
"""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --- the binary --------------------------------------------------------------------------------------


def floe_bin_path() -> pathlib.Path:
    """FLOE_BIN, checked: fails the test (never skips) when it is unset or not an executable."""
    value = os.environ.get("FLOE_BIN")
    if not value:
        pytest.fail(
            "FLOE_BIN is not set: build floe (`cargo build -p floe`) and run with "
            "FLOE_BIN=$PWD/target/debug/floe",
            pytrace=False,
        )
    path = pathlib.Path(value).resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"FLOE_BIN={value!r} is not an executable file", pytrace=False)
    return path


@pytest.fixture(scope="session")
def floe_bin() -> pathlib.Path:
    return floe_bin_path()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def run_floe(
    *args: str, cwd: os.PathLike | str | None = None, input: bytes | None = None, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess:
    """Runs `FLOE_BIN args...` to completion (bounded) and returns its result (text output)."""
    cmd = [str(floe_bin_path()), *map(str, args)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"{cmd} did not finish within {timeout}s\nstdout:\n{_text(e.stdout)}\nstderr:\n{_text(e.stderr)}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, _text(proc.stdout), _text(proc.stderr))


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode("utf-8", "replace")


_LIVE_PROCESSES: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    # Last resort if pytest dies between start and teardown: never leave a server behind.
    for p in list(_LIVE_PROCESSES):
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


class FloeServer:
    """One `floe serve` process in its own directory.

    Attributes: `url` (http://127.0.0.1:PORT), `port`, `workdir`, `config_path`, `data_dir`,
    `catalog_db` (data_dir/catalog.db), `warehouse` (data_dir/warehouse), `log_path`.
    The log file is appended to across restarts.
    """

    def __init__(self, workdir: pathlib.Path, *, config_text: str | None = None, port: int | None = None,
                 data_dir: str = "floe-data", **config_kwargs: Any):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.config_path = self.workdir / "floe.toml"
        if config_text is None:
            config_text = floe_config(self.port, data_dir=data_dir, **config_kwargs)
        self.config_path.write_text(config_text)
        self.data_dir = self.workdir / data_dir
        self.catalog_db = self.data_dir / "catalog.db"
        self.warehouse = self.data_dir / "warehouse"
        self.log_path = self.workdir / "floe.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # -- lifecycle

    def start(self) -> None:
        assert not self.running, "server already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== floe serve start #{self.starts} (port {self.port}) =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(floe_bin_path()), "serve", "--config", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                start_new_session=True,
            )
        _LIVE_PROCESSES.add(self.proc)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(
                    f"floe serve exited with code {rc} before /healthz answered 200\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                r = http_get(f"{self.url}/healthz", timeout=2.0)
                if r.status == 200:
                    return
                last = f"status {r.status}: {r.body[:200]!r}"
            except OSError as e:  # refused while starting up, timeouts
                last = repr(e)
            if time.monotonic() > deadline:
                self.kill9()
                pytest.fail(
                    f"floe serve did not answer GET /healthz 200 within {timeout}s (last: {last})\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> tuple[int | None, bool]:
        """SIGTERM, wait up to `grace` s, then SIGKILL. Returns (returncode, needed_sigkill)."""
        if self.proc is None:
            return None, False
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait(timeout=30)
        rc = self.proc.returncode
        _LIVE_PROCESSES.discard(self.proc)
        self._note(f"stopped: returncode {rc}{' after SIGKILL' if killed else ''}")
        return rc, killed

    def kill9(self) -> None:
        """SIGKILL now (a crash at an arbitrary instruction)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        _LIVE_PROCESSES.discard(self.proc)
        self._note("killed with SIGKILL")

    def terminate(self) -> None:
        """Sends SIGTERM and returns at once (pair with `wait_exit`)."""
        assert self.proc is not None and self.proc.poll() is None, "server not running"
        self.proc.send_signal(signal.SIGTERM)
        self._note("sent SIGTERM")

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """Waits up to `timeout` s for the process to exit on its own.

        Returns (returncode, seconds waited); returncode is None when it was still running at the
        deadline (it is then left running: `stop()` or teardown ends it).
        """
        assert self.proc is not None
        start = time.monotonic()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - start
        _LIVE_PROCESSES.discard(self.proc)
        self._note(f"exited: returncode {self.proc.returncode}")
        return self.proc.returncode, time.monotonic() - start

    def restart(self) -> None:
        """Stops the server if it runs (gracefully), then starts it again on the same port."""
        if self.running:
            self.stop()
        self.start()

    # -- diagnostics

    def _note(self, msg: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"===== {msg} =====\n".encode())

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    # -- convenience

    def post_events(self, rows: list[dict] | None = None, **kwargs: Any) -> "Response":
        return post_events(self.url, rows, **kwargs)

    def catalog(self):
        return sql_catalog(self)


def _server_factory(request, base_dir: pathlib.Path):
    servers: list[FloeServer] = []
    request.node._floe_servers = servers

    def make(*, start: bool = True, **kwargs: Any) -> FloeServer:
        workdir = base_dir if not servers else base_dir / f"server-{len(servers)}"
        server = FloeServer(workdir, **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    return make, servers


def _stop_all(servers: list[FloeServer]) -> None:
    for server in servers:
        if server.running:
            _rc, killed = server.stop()
            if killed:
                print(f"floe serve needed SIGKILL at teardown\n{server.log_tail()}")


@pytest.fixture
def floe_server_factory(request, tmp_path, floe_bin):
    """Returns `make(start=True, **kwargs) -> FloeServer`; kwargs go to FloeServer / floe_config.

    Every server made is stopped at teardown. The first one lives in tmp_path, later ones in
    tmp_path/server-N.
    """
    make, servers = _server_factory(request, tmp_path)
    yield make
    _stop_all(servers)


@pytest.fixture(scope="module")
def module_floe_server_factory(request, tmp_path_factory, floe_bin):
    """Like `floe_server_factory`, for servers shared by the tests of one module."""
    make, servers = _server_factory(request, tmp_path_factory.mktemp(request.module.__name__))
    yield make
    _stop_all(servers)


@pytest.fixture
def floe_server(floe_server_factory) -> FloeServer:
    """A started `floe serve` with the standard config (see `floe_config`), in tmp_path."""
    return floe_server_factory()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """On a failed test, attach the tail of each floe server's log to the report."""
    report = yield
    if report.failed:
        for node in item.listchain():  # servers of the test, and of its module
            for server in getattr(node, "_floe_servers", []):
                report.sections.append((f"floe serve log tail ({server.workdir})", server.log_tail()))
    return report


# --- HTTP -------------------------------------------------------------------------------------------

# No proxies: requests go to 127.0.0.1 even when http_proxy is set in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"response body (status {self.status}) is not JSON: {self.body[:500]!r}") from None

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


def http_request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout: float = HTTP_TIMEOUT) -> Response:
    """One HTTP request with urllib; 4xx/5xx are returned, not raised."""
    assert urllib.parse.urlsplit(url).hostname in (LOOPBACK, "localhost"), url
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers.items()), r.read())
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, dict(e.headers.items()), e.read())


def http_get(url: str, timeout: float = HTTP_TIMEOUT) -> Response:
    return http_request("GET", url, timeout=timeout)


def encode_rows(rows: list[Any], fmt: str = "json") -> bytes:
    """`json`: one JSON array; `ndjson`: one JSON value per line."""
    if fmt == "json":
        return json.dumps(rows).encode()
    if fmt == "ndjson":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    raise ValueError(fmt)


def events_url(url: str, stream: str = STREAM) -> str:
    return f"{url}/v1/streams/{stream}/events"


def post_events(url: str, rows: list[Any] | None = None, *, stream: str = STREAM, fmt: str = "json",
                gzip: bool = False, body: bytes | None = None, headers: dict[str, str] | None = None,
                content_type: str | None = None, timeout: float = HTTP_TIMEOUT) -> Response:
    """POST {url}/v1/streams/{stream}/events.

    Either `rows` (encoded per `fmt`: "json" array or "ndjson") or a raw `body`. `gzip=True`
    compresses the body and sets Content-Encoding: gzip.
    """
    if body is None:
        assert rows is not None
        body = encode_rows(rows, fmt)
    if gzip:
        body = gzip_module.compress(body)
    h = {"Content-Type": content_type or ("application/x-ndjson" if fmt == "ndjson" else "application/json")}
    if gzip:
        h["Content-Encoding"] = "gzip"
    h.update(headers or {})
    return http_request("POST", events_url(url, stream), body=body, headers=h, timeout=timeout)


def post_large(url: str, path: str, body: bytes, headers: dict[str, str] | None = None,
               timeout: float = HTTP_TIMEOUT) -> Response:
    """POSTs a big body so that a server that refuses it early (413) is still heard.

    A server may answer before reading the whole body and close the connection; a plain client
    then dies with EPIPE/ECONNRESET while still sending. This one sends `Expect: 100-continue`,
    and while sending watches the socket, stopping as soon as an answer arrives.
    """
    u = urllib.parse.urlsplit(url)
    assert u.hostname in (LOOPBACK, "localhost"), url
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        hdrs = {
            "Host": f"{u.hostname}:{u.port}",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Expect": "100-continue",
            "Connection": "close",
            **(headers or {}),
        }
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        sock.sendall(head.encode("latin-1"))

        send_body = True
        readable, _, _ = select.select([sock], [], [], 2.0)
        if readable:
            peeked = _peek_until(sock, b"\r\n\r\n", deadline)
            first_line = peeked.split(b"\r\n", 1)[0]
            if re.match(rb"HTTP/1\.[01] 100\b", first_line):
                sock.recv(peeked.index(b"\r\n\r\n") + 4)  # consume the interim answer
            else:
                send_body = False  # a final answer already: do not send the body

        if send_body:
            view = memoryview(body)
            sent = 0
            while sent < len(body):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"sending {len(body)} bytes did not finish within {timeout}s")
                readable, writable, _ = select.select([sock], [sock], [], remaining)
                if readable:
                    break  # the server answered early
                if writable:
                    try:
                        sent += sock.send(view[sent:sent + 65536])
                    except (BrokenPipeError, ConnectionResetError):
                        break

        resp = http.client.HTTPResponse(sock, method="POST")
        try:
            resp.begin()
            data = resp.read()
        except (ConnectionResetError, http.client.RemoteDisconnected) as e:
            raise AssertionError(f"the server reset the connection without an HTTP answer: {e!r}") from None
        return Response(resp.status, dict(resp.getheaders()), data)
    finally:
        sock.close()


def _peek_until(sock: socket.socket, marker: bytes, deadline: float) -> bytes:
    while True:
        data = sock.recv(65536, socket.MSG_PEEK)
        if marker in data or not data:
            return data
        if time.monotonic() > deadline:
            return data
        time.sleep(0.01)


def assert_error_body(resp: Response, status: int) -> dict:
    """Asserts `status` and the error shape {"error": {"code": str, "message": str}, ...}."""
    assert resp.status == status, f"expected HTTP {status}, got {resp.status}: {resp.body[:1000]!r}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"no error object: {body}"
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], f"error.code missing/empty: {body}"
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing/empty: {body}"
    return body


def assert_row_error(body: dict, row: int, field: str) -> dict:
    """Asserts the 400 body's `rows` list names (row, field) and gives a message; returns it."""
    rows = body.get("rows")
    assert isinstance(rows, list) and rows, f"no `rows` list in error body: {body}"
    for r in rows:
        assert isinstance(r, dict) and {"row", "field", "message"} <= set(r), f"bad row error entry {r!r} in {body}"
    hits = [r for r in rows if r["row"] == row and r["field"] == field]
    assert hits, f"expected a row error for row {row}, field {field!r}; got {rows}"
    assert isinstance(hits[0]["message"], str) and hits[0]["message"]
    return hits[0]


def assert_accepted(resp: Response, n: int) -> dict:
    assert resp.status == 200, f"expected 200, got {resp.status}: {resp.body[:1000]!r}"
    body = resp.json()
    assert body.get("accepted") == n, f"expected accepted={n}: {body}"
    return body


# --- idempotency keys, failures of the connection, health ---------------------------------------

#: Request header naming a retry-safe request (DESIGN.md section 2 and 4).
IDEMPOTENCY_KEY = "Idempotency-Key"
#: Response header on an answer replayed for a key seen before.
REPLAYED = "Idempotent-Replayed"

#: What a client sees when the server is down, restarting, or dies in the middle of a request
#: (urllib's URLError, ConnectionRefused/Reset, RemoteDisconnected, timeouts, IncompleteRead).
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


def key_headers(key: str, **more: str) -> dict[str, str]:
    """`{"Idempotency-Key": key}` plus `more`."""
    return {IDEMPOTENCY_KEY: key, **more}


def is_replayed(resp: Response) -> bool:
    """Whether the answer carries `Idempotent-Replayed: true`."""
    value = resp.header(REPLAYED)
    return value is not None and value.strip().lower() == "true"


def try_post_events(url: str, rows: list[Any] | None = None, **kwargs: Any) -> "Response | BaseException":
    """`post_events`, but a connection failure is returned (not raised): the caller decides
    whether the request counts as unacknowledged."""
    try:
        return post_events(url, rows, **kwargs)
    except CONNECTION_ERRORS as e:
        return e


def healthz(server: FloeServer) -> tuple[int, Any]:
    """GET /healthz: (HTTP status, parsed JSON body)."""
    r = http_get(f"{server.url}/healthz", timeout=10.0)
    return r.status, r.json()


def metrics_samples(server: FloeServer) -> list[tuple[str, dict[str, str], float]]:
    """GET /metrics, parsed (see `parse_prometheus`)."""
    r = http_get(f"{server.url}/metrics", timeout=10.0)
    assert r.status == 200, f"GET /metrics: {r.status} {r.body[:300]!r}"
    return parse_prometheus(r.body.decode())


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Calls `predicate()` until it returns a truthy value (returned), at most `timeout` s;
    then fails naming `what` and the last value or error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except AssertionError:
            raise
        except Exception as e:  # server restarting, catalog busy, ...
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


# --- reading the table ---------------------------------------------------------------------------


def local_path(location: str) -> pathlib.Path:
    """A local path from an Iceberg location: file:///x, file:/x or /x."""
    u = urllib.parse.urlsplit(location)
    if u.scheme == "file":
        return pathlib.Path(urllib.parse.unquote(u.path))
    assert u.scheme == "", f"not a local location: {location}"
    return pathlib.Path(location)


def sql_catalog(server: FloeServer):
    """PyIceberg's SqlCatalog on floe's SQLite catalog (never creates catalog tables itself)."""
    from pyiceberg.catalog.sql import SqlCatalog

    if not server.catalog_db.exists():
        # sqlite would create an empty file here; floe must be the one to create the catalog.
        raise FileNotFoundError(f"{server.catalog_db} does not exist (yet)")
    return SqlCatalog(
        CATALOG_NAME,
        uri=f"sqlite:///{server.catalog_db}",
        warehouse=f"file://{server.warehouse}",
        init_catalog_tables="false",
    )


def load_table(server: FloeServer, table: str = TABLE):
    catalog = sql_catalog(server)
    try:
        return catalog.load_table(table)
    finally:
        catalog.engine.dispose()


def read_table(server: FloeServer, table: str = TABLE):
    """The whole table as a pyarrow.Table, read with PyIceberg."""
    return load_table(server, table).scan().to_arrow()


def wait_for_rows(server: FloeServer, n: int, timeout: float = ROWS_TIMEOUT, *, settle: float = 0.0,
                  table: str = TABLE):
    """Polls PyIceberg until `table` holds at least `n` rows (bounded by `timeout`).

    With `settle` > 0, waits that many seconds more and reads again, so that rows committed late
    (duplicates) are seen too. Returns the last pyarrow.Table read.
    """
    deadline = time.monotonic() + timeout
    last = None
    last_error: BaseException | None = None
    while True:
        try:
            last = read_table(server, table)
            last_error = None
        except Exception as e:  # not created yet, catalog busy, ...
            last_error = e
        if last is not None and last.num_rows >= n:
            break
        if time.monotonic() > deadline:
            have = "no table" if last is None else f"{last.num_rows} rows"
            raise AssertionError(
                f"{table}: {have} after {timeout}s, want {n}"
                + (f"; last error: {last_error!r}" if last_error else "")
            )
        time.sleep(0.25)
    if settle > 0:
        time.sleep(settle)
        last = read_table(server, table)
    return last


def id_counts(table) -> collections.Counter:
    """How often each `id` occurs in a pyarrow.Table."""
    return collections.Counter(table.column("id").to_pylist())


def read_table_or_none(server: FloeServer, table: str = TABLE):
    """`read_table`, or None while the catalog or the table does not exist yet."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return read_table(server, table)
    except (FileNotFoundError, NoSuchTableError):
        return None


def wait_for_ids(server: FloeServer, ids: Iterable[str], timeout: float = ROWS_TIMEOUT, *,
                 settle: float = 0.0, table: str = TABLE):
    """Polls PyIceberg until every id of `ids` is in `table` (bounded by `timeout`).

    Unlike `wait_for_rows` this does not trust a row count, so rows that are in the table but not
    in `ids` (e.g. of requests whose 200 was lost in a crash) cannot end the wait early. With
    `settle` > 0 it waits that much more and reads again (late duplicates). Returns the last
    pyarrow.Table read.
    """
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    last = None
    last_error: BaseException | None = None
    missing = wanted
    while True:
        try:
            last = read_table(server, table)
            last_error = None
            missing = wanted - set(last.column("id").to_pylist())
        except Exception as e:  # not created yet, catalog busy, ...
            last_error = e
        if last is not None and not missing:
            break
        if time.monotonic() > deadline:
            have = "no table" if last is None else f"{last.num_rows} rows"
            raise AssertionError(
                f"{table}: {have} after {timeout}s, {len(missing)} of {len(wanted)} wanted ids missing "
                f"(e.g. {sorted(missing)[:5]})" + (f"; last error: {last_error!r}" if last_error else "")
            )
        time.sleep(0.25)
    if settle > 0:
        time.sleep(settle)
        last = read_table(server, table)
    return last


def metadata_location(server: FloeServer, namespace: str = "analytics", name: str = "events") -> str:
    """The table's current metadata file, straight from the JDBC-layout catalog."""
    con = sqlite3.connect(f"file:{server.catalog_db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute(
            "SELECT metadata_location FROM iceberg_tables "
            "WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
            (CATALOG_NAME, namespace, name),
        ).fetchone()
    finally:
        con.close()
    assert row and row[0], f"no metadata_location for {namespace}.{name} in {server.catalog_db}"
    return row[0]


def duckdb_scan(con, server: FloeServer, sql_tail: str = "ORDER BY id"):
    """`SELECT * FROM iceberg_scan('<metadata_location>') <sql_tail>` as a pyarrow.Table.

    The location is passed exactly as the catalog holds it (DuckDB 1.5 reads file:///, file:/ and
    plain paths alike).
    """
    loc = metadata_location(server).replace("'", "''")
    return con.execute(f"SELECT * FROM iceberg_scan('{loc}') {sql_tail}").to_arrow_table()


def ids_exactly_once(table, expected_ids: Iterable[str]) -> None:
    """Asserts the table's `id` column holds each expected id exactly once and nothing else."""
    counts = collections.Counter(table.column("id").to_pylist())
    expected = set(expected_ids)
    dupes = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(expected - set(counts))
    extra = sorted(set(counts) - expected)
    assert not (dupes or missing or extra), (
        f"rows not exactly once: {len(dupes)} duplicated (e.g. {dupes[:5]}), "
        f"{len(missing)} missing (e.g. {missing[:5]}), {len(extra)} unexpected (e.g. {extra[:5]})"
    )


# --- events ------------------------------------------------------------------------------------

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
NAMESPACES = ("app.web", "app.api", "billing")
TYPES = ("click", "view", "purchase")


def parse_ts(value: str | int) -> dt.datetime:
    """The instant a `ts` input denotes: RFC 3339 string or epoch milliseconds, as aware UTC."""
    if isinstance(value, int):
        return EPOCH + dt.timedelta(milliseconds=value)
    return dt.datetime.fromisoformat(value).astimezone(UTC)


def make_events(prefix: str, n: int, *, namespaces: Iterable[str] = NAMESPACES, start: int = 0) -> list[dict]:
    """`n` valid events with ids `{prefix}-{i:05d}`, spread over `namespaces` and TYPES."""
    namespaces = list(namespaces)
    base = dt.datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
    events = []
    for i in range(start, start + n):
        ts = base + dt.timedelta(seconds=i, milliseconds=i % 1000)
        events.append({
            "ns": namespaces[i % len(namespaces)],
            "type": TYPES[i % len(TYPES)],
            "id": f"{prefix}-{i:05d}",
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {"i": i, "tags": ["a", "b"][: i % 3]},
            "seq": i,
        })
    return events


def expected_row(event: dict) -> dict:
    """The analytics.events row the default pipeline makes from one accepted event."""
    return {
        "ns": event["ns"],
        "type": event["type"],
        "id": event["id"],
        "ts": parse_ts(event["ts"]),
        "data": event.get("data"),
        "visibility": event.get("visibility"),
        "seq": event.get("seq"),
        "type_upper": event["type"].upper(),
    }


def expected_rows(events: Iterable[dict]) -> list[dict]:
    """Expected table rows (after the pipeline's WHERE), sorted by id."""
    return sorted((expected_row(e) for e in events if e["ns"] != "drop.me"), key=lambda r: r["id"])


# --- metrics -------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        samples.append((name, dict(_LABEL.findall(labels)), float(value)))
    return samples


def metric_value(samples, name: str, **labels: str) -> float | None:
    """Sum of the samples named `name` whose labels include `labels`; None when there are none."""
    hits = [v for n, ls, v in samples if n == name and all(ls.get(k) == v2 for k, v2 in labels.items())]
    return sum(hits) if hits else None


# --- DuckDB ----------------------------------------------------------------------------------------

#: Extensions loaded into `duckdb_con`, in order (iceberg reads manifests through avro).
DUCKDB_EXTENSIONS = ("avro", "httpfs", "iceberg")


def _duckdb_extension_path(name: str) -> pathlib.Path:
    """Where the `duckdb-extension-<name>` wheel put the extension binary.

    The wheels (e.g. duckdb_extension_iceberg-1.5.5) are plain data packages: they install
    site-packages/duckdb_extension_<name>/extensions/v<duckdb version>/<name>.duckdb_extension
    (a signed official build for linux_amd64) and nothing else. DuckDB does not search there, so
    the fixture LOADs the file by its path: no INSTALL, no network.
    """
    import duckdb

    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"package duckdb-extension-{name} is not installed (run scripts/setup-venv.sh)", pytrace=False)
    base = pathlib.Path(list(spec.submodule_search_locations)[0])
    path = base / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        found = sorted(str(p) for p in base.rglob("*.duckdb_extension"))
        pytest.fail(f"no {path} (duckdb {duckdb.__version__}); the package has: {found}", pytrace=False)
    return path


def duckdb_connect(extension_dir: os.PathLike | str | None = None):
    """A DuckDB connection with avro, httpfs and iceberg loaded from the pip wheels, offline.

    Auto-install and auto-load of known extensions are off, so DuckDB never reaches for
    extensions.duckdb.org; `extension_dir` (if given) isolates it from ~/.duckdb.
    """
    import duckdb

    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if extension_dir is not None:
        config["extension_directory"] = str(extension_dir)
    con = duckdb.connect(config=config)
    for name in DUCKDB_EXTENSIONS:
        path = str(_duckdb_extension_path(name)).replace("'", "''")
        con.execute(f"LOAD '{path}'")
    return con


@pytest.fixture
def duckdb_con(tmp_path_factory):
    con = duckdb_connect(tmp_path_factory.mktemp("duckdb-ext"))
    yield con
    con.close()
