"""floe's tables read back the way an outside user reads them, and checks of what they hold.

PyIceberg's `SqlCatalog` on floe's SQLite catalog file (JDBC layout; opened only once the file
exists, with `init_catalog_tables="false"`, so the tests never create or alter floe's catalog
tables), PyIceberg's `RestCatalog` on floe's `/iceberg` routes (docs/rest-catalog.md), and the
catalog's `iceberg_tables` row read with sqlite3 (`metadata_location`, for DuckDB's
`iceberg_scan`). The waits poll until rows or ids are there, bounded by a timeout.
"""

from __future__ import annotations

import collections
import pathlib
import sqlite3
import time
import urllib.parse
from typing import TYPE_CHECKING, Iterable

from .config import CATALOG_NAME, TABLE

if TYPE_CHECKING:
    from .server import FloeServer

#: Default time `wait_for_rows` / `wait_for_ids` wait (seconds; the sink commits every second).
ROWS_TIMEOUT = 60.0


def local_path(location: str) -> pathlib.Path:
    """A local path from an Iceberg location: file:///x, file:/x or /x."""
    u = urllib.parse.urlsplit(location)
    if u.scheme == "file":
        return pathlib.Path(urllib.parse.unquote(u.path))
    assert u.scheme == "", f"not a local location: {location}"
    return pathlib.Path(location)


def sql_catalog(server: FloeServer):
    """PyIceberg's SqlCatalog on floe's catalog database — the SQLite file, or PostgreSQL when
    the server was given a `catalog_uri` (never creates catalog tables itself)."""
    from pyiceberg.catalog.sql import SqlCatalog

    if server.catalog_uri and server.catalog_uri.startswith(("postgres://", "postgresql://")):
        return pg_sql_catalog(server.catalog_uri, server.warehouse)
    if not server.catalog_db.exists():
        # sqlite would create an empty file here; floe must be the one to create the catalog.
        raise FileNotFoundError(f"{server.catalog_db} does not exist (yet)")
    if server.s3_props:
        return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{server.catalog_db}", warehouse=server.warehouse_uri,
                          init_catalog_tables="false", **server.s3_props)
    return SqlCatalog(
        CATALOG_NAME,
        uri=f"sqlite:///{server.catalog_db}",
        warehouse=f"file://{server.warehouse}",
        init_catalog_tables="false",
    )


def pg_sql_catalog(catalog_uri: str, warehouse: pathlib.Path):
    """PyIceberg's SqlCatalog on a PostgreSQL catalog (`postgres://…` as floe.toml spells it)."""
    from pyiceberg.catalog.sql import SqlCatalog

    scheme, rest = catalog_uri.split("://", 1)
    return SqlCatalog(CATALOG_NAME, uri=f"postgresql+psycopg2://{rest}", warehouse=f"file://{warehouse}",
                      init_catalog_tables="false")


def rest_catalog(server: FloeServer, token: str | None = None, **props):
    """PyIceberg's RestCatalog on floe's `/iceberg` (no proxies: loopback only)."""
    from pyiceberg.catalog.rest import RestCatalog

    if token is not None:
        props["token"] = token
    return RestCatalog(CATALOG_NAME, uri=f"{server.url}/iceberg", **props)


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
