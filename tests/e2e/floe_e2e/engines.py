"""DuckDB on floe's tables, offline: the iceberg extension loaded from the pip wheels.

`duckdb_connect()` LOADs avro, httpfs and iceberg from the `duckdb-extension-*` wheels by path,
with auto-install and auto-load off, so DuckDB never reaches for extensions.duckdb.org (see
tests/e2e/README.md, "How DuckDB gets the iceberg extension without network").
`duckdb_scan()` reads a table through `iceberg_scan` on its current metadata file.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import TYPE_CHECKING

import pytest

from .tables import metadata_location

if TYPE_CHECKING:
    from .server import FloeServer


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


def duckdb_scan(con, server: FloeServer, sql_tail: str = "ORDER BY id"):
    """`SELECT * FROM iceberg_scan('<metadata_location>') <sql_tail>` as a pyarrow.Table.

    The location is passed exactly as the catalog holds it (DuckDB 1.5 reads file:///, file:/ and
    plain paths alike).
    """
    loc = metadata_location(server).replace("'", "''")
    return con.execute(f"SELECT * FROM iceberg_scan('{loc}') {sql_tail}").to_arrow_table()
