"""The catalog on PostgreSQL (docs/catalog.md): two `floe serve` processes on one PostgreSQL
catalog append to the same table at once; every acknowledged row lands exactly once, and
PyIceberg's `SqlCatalog` reads the table from PostgreSQL, as `floe catalog` prints it.

The server comes from `FLOE_TEST_POSTGRES` (scripts/test.sh starts one) or, when that is unset,
from `scripts/postgres.sh` started here; each test gets a database of its own.
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import re

from floe_e2e.config import EVENT_FIELDS_TOML, LOOPBACK, sink_pipeline_toml
from floe_e2e.http import assert_accepted, post_events
from floe_e2e.events import make_events
from floe_e2e.server import FloeServer, free_port, run_floe
from floe_e2e.tables import ids_exactly_once, load_table, wait_for_ids

TABLE = "analytics.events"


def node_config(port: int, stream: str, pipeline: str, catalog_uri: str, warehouse: pathlib.Path) -> str:
    """One floe process of the shared catalog: its own stream and pipeline, the shared table."""
    return f"""\
[server]
listen = "{LOOPBACK}:{port}"
data_dir = "floe-data"

[catalog]
name = "floe"
warehouse = {json.dumps(str(warehouse))}
uri = {json.dumps(catalog_uri)}

[[streams]]
name = "{stream}"
{EVENT_FIELDS_TOML}
""" + sink_pipeline_toml(
        "events_table", TABLE, pipeline,
        f"INSERT INTO events_table SELECT ns, type, id, ts, data, visibility, seq FROM {stream}",
        partition_by=("ns",),
    )


def test_two_floes_on_one_postgres_catalog_race_the_same_table(tmp_path, floe_bin, postgres_db):
    warehouse = tmp_path / "warehouse"
    nodes = []
    try:
        for name in ("a", "b"):
            port = free_port()
            server = FloeServer(tmp_path / name, port=port,
                                config_text=node_config(port, f"events_{name}", f"{name}_to_table",
                                                        postgres_db, warehouse),
                                catalog_uri=postgres_db)
            nodes.append(server)
        for server in nodes:
            server.start()

        # Both post at once, in many small requests, so their commits to the one table race.
        def feed(i: int, server: FloeServer, stream: str, prefix: str) -> list[str]:
            events = make_events(f"{prefix}{i}-", 40)
            assert_accepted(post_events(server.url, events, stream=stream), 40)
            return [e["id"] for e in events]

        acked: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(feed, i, server, f"events_{name}", name)
                       for i in range(12) for server, name in zip(nodes, ("a", "b"))]
            for f in futures:
                acked.extend(f.result(timeout=120))
        assert len(acked) == 12 * 2 * 40

        # The helpers read the table through PyIceberg's SqlCatalog on the server's catalog_uri
        # (PostgreSQL); `settle` lets any late duplicate commit land before judging.
        table = wait_for_ids(nodes[0], acked, timeout=90, settle=2.0, table=TABLE)
        assert all(s.running for s in nodes)
        ids_exactly_once(table, acked)

        # Both processes committed to the one table, through one PostgreSQL catalog.
        pipelines = {s.summary.additional_properties.get("floe.pipeline")
                     for s in load_table(nodes[0], TABLE).snapshots()}
        assert {"a_to_table", "b_to_table"} <= pipelines, pipelines

        # `floe catalog` prints the PostgreSQL way in, and its PyIceberg snippet works.
        out = run_floe("catalog", "--config", nodes[0].config_path, cwd=nodes[0].workdir)
        assert out.returncode == 0, out.stderr
        (snippet_uri,) = re.findall(r'SqlCatalog\("floe", uri="(postgresql\+psycopg2://[^"]+)"', out.stdout)
        from pyiceberg.catalog.sql import SqlCatalog

        snippet = SqlCatalog("floe", uri=snippet_uri, warehouse=f"file://{warehouse}", init_catalog_tables="false")
        try:
            assert snippet.load_table(TABLE).scan().to_arrow().num_rows == len(acked)
        finally:
            snippet.engine.dispose()
        assert "jdbc:postgresql://" in out.stdout, out.stdout
    finally:
        for server in nodes:
            if server.running:
                server.stop()
