"""A real S3-compatible server on loopback for the S3 tests: s3s-fs 0.14.1 (crates.io), built
once by `scripts/s3.sh install`, serving a temp folder.

`S3Server(root)` starts it on a free loopback port (`start()`); it can be stopped and started
again on the same port over the same folder (`stop()` / `start()`), and started with other keys
(`start(secret_key=...)`) to make floe's credentials wrong. The bucket `warehouse` exists from the
start; `objects(prefix)` lists the keys the store holds (read from its folder).

`floe_s3_kwargs(s3)` gives the `FloeServer` keyword arguments of a floe whose warehouse is
`s3://warehouse/floe` on this server (`[catalog.s3]` with path-style requests), and
`pyiceberg_props(s3)` the FileIO properties PyIceberg needs to read it.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import socket
import subprocess
import time

from .config import LOOPBACK

ROOT = pathlib.Path(__file__).resolve().parents[3]
BUCKET = "warehouse"
PREFIX = "floe"
WAREHOUSE = f"s3://{BUCKET}/{PREFIX}"
ACCESS_KEY = "floe-test"
SECRET_KEY = "floe-test-secret"
REGION = "us-east-1"
START_TIMEOUT = 20.0

_BIN: pathlib.Path | None = None
_LIVE: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    for p in list(_LIVE):
        if p.poll() is None:
            p.kill()


def s3s_bin() -> pathlib.Path:
    """The s3s-fs binary (`scripts/s3.sh install` builds it the first time)."""
    global _BIN
    if _BIN is None:
        out = subprocess.run([str(ROOT / "scripts" / "s3.sh"), "install"], check=True, capture_output=True,
                             text=True, timeout=1800)
        _BIN = pathlib.Path(out.stdout.strip().splitlines()[-1])
    return _BIN


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)
        self.data = self.root / "data"
        (self.data / BUCKET).mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.log_path = self.root / "s3s.log"
        self.proc: subprocess.Popen | None = None

    def start(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(s3s_bin()), "--host", LOOPBACK, "--port", str(self.port), "--access-key", access_key,
                 "--secret-key", secret_key, str(self.data)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _LIVE.add(self.proc)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"s3s-fs did not start on {self.endpoint}:\n{self.log_tail()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _LIVE.discard(self.proc)

    def objects(self, prefix: str = "") -> list[str]:
        """The keys below `prefix` in bucket `warehouse`, as the store's folder holds them."""
        base = self.data / BUCKET
        keys = []
        for p in sorted(base.rglob("*")):
            if p.is_file():
                key = p.relative_to(base).as_posix()
                # s3s-fs keeps multipart uploads and metadata in dot-folders of its own.
                if key.startswith(prefix) and not any(part.startswith(".") for part in key.split("/")):
                    keys.append(key)
        return keys

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def catalog_s3_toml(s3: S3Server, *, vend_credentials: bool = True, secret_key: str = SECRET_KEY) -> str:
    """The `[catalog.s3]` table of a floe reaching `s3` (appended at the end of floe.toml)."""
    return f"""
[catalog.s3]
endpoint = {json.dumps(s3.endpoint)}
region = "{REGION}"
access_key_id = "{ACCESS_KEY}"
secret_access_key = {json.dumps(secret_key)}
path_style = true
vend_credentials = {"true" if vend_credentials else "false"}
"""


def floe_s3_kwargs(s3: S3Server, *, extra: str = "", **toml_kwargs) -> dict:
    """`FloeServer(...)` keyword arguments for a floe whose warehouse is on `s3`."""
    return {
        "warehouse": WAREHOUSE,
        "extra": extra + catalog_s3_toml(s3, **toml_kwargs),
        "s3_props": pyiceberg_props(s3),
    }


def pyiceberg_props(s3: S3Server) -> dict[str, str]:
    """PyIceberg FileIO properties for the store (path-style requests, the test keys)."""
    return {
        "s3.endpoint": s3.endpoint,
        "s3.access-key-id": ACCESS_KEY,
        "s3.secret-access-key": SECRET_KEY,
        "s3.region": REGION,
        "s3.force-virtual-addressing": "false",
    }


def duckdb_s3_secret(con, s3: S3Server) -> None:
    """A DuckDB secret for the store (httpfs: path-style, plain http)."""
    con.execute(
        f"CREATE OR REPLACE SECRET floe_s3 (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}', "
        f"REGION '{REGION}', ENDPOINT '{LOOPBACK}:{s3.port}', URL_STYLE 'path', USE_SSL false)"
    )


def no_proxy_env() -> None:
    """Loopback requests must never go through a proxy."""
    os.environ.setdefault("NO_PROXY", LOOPBACK)
