"""pytest fixtures and hooks of floe's end-to-end tests; the helpers are the `floe_e2e` package.

- `floe_bin`: FLOE_BIN, checked (fails, never skips, when it is unset or not executable).
- `floe_server` / `floe_server_factory` / `module_floe_server_factory`: running `floe serve`
  processes (`floe_e2e.server.FloeServer`) in temp dirs, stopped at teardown.
- `duckdb_con`: a DuckDB connection with the iceberg extension loaded offline
  (`floe_e2e.engines.duckdb_connect`).
- On a failed test, the tail of each of its servers' logs is attached to the report.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

# `python -m pytest tests/e2e` from the repo root: make `floe_e2e` (next to this file) importable
# whatever pytest's import mode or rootdir.
_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from floe_e2e.engines import duckdb_connect  # noqa: E402
from floe_e2e.server import FloeServer, floe_bin_path, server_factory, servers_of, stop_all  # noqa: E402


@pytest.fixture(scope="session")
def floe_bin() -> pathlib.Path:
    return floe_bin_path()


@pytest.fixture
def floe_server_factory(request, tmp_path, floe_bin):
    """Returns `make(start=True, **kwargs) -> FloeServer`; kwargs go to FloeServer / floe_config.

    Every server made is stopped at teardown. The first one lives in tmp_path, later ones in
    tmp_path/server-N.
    """
    make, servers = server_factory(request.node, tmp_path)
    yield make
    stop_all(servers)


@pytest.fixture(scope="module")
def module_floe_server_factory(request, tmp_path_factory, floe_bin):
    """Like `floe_server_factory`, for servers shared by the tests of one module."""
    make, servers = server_factory(request.node, tmp_path_factory.mktemp(request.module.__name__))
    yield make
    stop_all(servers)


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
            for server in servers_of(node):
                report.sections.append((f"floe serve log tail ({server.workdir})", server.log_tail()))
    return report


@pytest.fixture
def duckdb_con(tmp_path_factory):
    con = duckdb_connect(tmp_path_factory.mktemp("duckdb-ext"))
    yield con
    con.close()


# --- PostgreSQL (the catalog on PostgreSQL: docs/catalog.md) --------------------------------------

_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server on loopback (its `postgres` database): `FLOE_TEST_POSTGRES`
    (scripts/test.sh starts one), else one started here by scripts/postgres.sh for the session."""
    url = os.environ.get("FLOE_TEST_POSTGRES")
    if url:
        yield url
        return
    # Not under pytest's tmp dir: as root the server runs as `postgres`, which must reach it.
    parent = pathlib.Path(tempfile.mkdtemp(prefix="floe-e2e-pg-"))
    parent.chmod(0o755)
    pg_dir = parent / "pg"
    out = subprocess.run([str(_ROOT / "scripts/postgres.sh"), "start", str(pg_dir)], check=True,
                         capture_output=True, text=True, timeout=180)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(_ROOT / "scripts/postgres.sh"), "stop", str(pg_dir)], timeout=120)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_server):
    """A fresh database on the server: its `postgres://` URL."""
    import psycopg2

    name = f"floe_e2e_{uuid.uuid4().hex[:12]}"
    con = psycopg2.connect(postgres_server)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    con.close()
    return postgres_server.rsplit("/", 1)[0] + "/" + name
