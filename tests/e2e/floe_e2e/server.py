"""Running the floe binary: `floe serve` in a temp dir (`FloeServer`) and one-shot CLI commands.

A server gets a free loopback port, its own directory (floe.toml, data dir, log file appended to
across restarts) and is healthy (`GET /healthz` 200) when `start()` returns. It can be stopped
gracefully (SIGTERM, then SIGKILL after a grace), killed with SIGKILL at once (`kill9`), or sent
SIGTERM without waiting (`terminate` + `wait_exit`). Every wait is bounded; a server left running
when the interpreter exits is killed.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import signal
import socket
import subprocess
import time
from typing import Any

import pytest

from .config import LOOPBACK, floe_config
from .http import Response, http_get, post_events
from .tables import sql_catalog

# --- limits (seconds) ----------------------------------------------------------------------------

#: How long `floe serve` may take to answer GET /healthz with 200.
HEALTH_TIMEOUT = 60.0
#: How long a SIGTERM-ed server may take to exit before it gets SIGKILL.
STOP_GRACE = 20.0
#: Timeout of one CLI invocation (`floe sql`, `floe send`).
CLI_TIMEOUT = 120.0


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
    `catalog_db` (data_dir/catalog.db), `warehouse` (data_dir/warehouse), `log_path`,
    `catalog_uri` (the `[catalog] uri` given to `floe_config`; None: the SQLite file `catalog_db`),
    `s3_props` / `warehouse_uri` for a warehouse on S3 (None for the local one).
    The log file is appended to across restarts.
    """

    def __init__(self, workdir: pathlib.Path, *, config_text: str | None = None, port: int | None = None,
                 data_dir: str = "floe-data", catalog_uri: str | None = None,
                 s3_props: dict[str, str] | None = None, **config_kwargs: Any):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.config_path = self.workdir / "floe.toml"
        if config_text is None:
            config_text = floe_config(self.port, data_dir=data_dir, catalog_uri=catalog_uri, **config_kwargs)
        self.config_path.write_text(config_text)
        self.data_dir = self.workdir / data_dir
        self.catalog_uri = catalog_uri
        #: PyIceberg FileIO properties of an S3 warehouse (`floe_e2e.s3.floe_s3_kwargs`).
        self.s3_props = s3_props
        self.warehouse_uri = config_kwargs.get("warehouse") if s3_props else None
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

    def post_events(self, rows: list[dict] | None = None, **kwargs: Any) -> Response:
        return post_events(self.url, rows, **kwargs)

    def catalog(self):
        return sql_catalog(self)


# --- servers of a test (used by the fixtures and the report hook in conftest.py) ------------------

#: The attribute of a pytest node that lists the servers made for it.
_SERVERS_ATTR = "_floe_servers"


def server_factory(node, base_dir: pathlib.Path):
    """`(make, servers)`: `make(start=True, **kwargs) -> FloeServer` makes a server (kwargs go to
    FloeServer / floe_config) and appends it to `servers`, which is also recorded on the pytest
    `node` (see `servers_of`). The first server lives in `base_dir`, later ones in
    `base_dir/server-N`."""
    servers: list[FloeServer] = []
    setattr(node, _SERVERS_ATTR, servers)

    def make(*, start: bool = True, **kwargs: Any) -> FloeServer:
        workdir = base_dir if not servers else base_dir / f"server-{len(servers)}"
        server = FloeServer(workdir, **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    return make, servers


def servers_of(node) -> list[FloeServer]:
    """The servers `server_factory` made for a pytest node (none: [])."""
    return getattr(node, _SERVERS_ATTR, [])


def stop_all(servers: list[FloeServer]) -> None:
    """Stops every running server gracefully; prints the log tail of one that needed SIGKILL."""
    for server in servers:
        if server.running:
            _rc, killed = server.stop()
            if killed:
                print(f"floe serve needed SIGKILL at teardown\n{server.log_tail()}")


# --- waiting -------------------------------------------------------------------------------------


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
