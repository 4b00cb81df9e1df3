"""Checks of the test harness itself; these need no floe binary.

- DuckDB loads iceberg (and avro, httpfs) from the pip wheels with auto-install off: no network.
- The standard floe.toml is valid TOML with the keys docs/config.md names.
- The Prometheus text parser used by test_metrics.py.
"""

import tomllib

from floe_e2e.config import floe_config
from floe_e2e.metrics import metric_value, parse_prometheus


def test_duckdb_iceberg_extension_loads_offline(duckdb_con):
    loaded = {
        name: path
        for name, path in duckdb_con.execute(
            "SELECT extension_name, install_path FROM duckdb_extensions() WHERE loaded"
        ).fetchall()
    }
    for name in ("iceberg", "avro", "httpfs", "parquet"):
        assert name in loaded, f"{name} not loaded: {sorted(loaded)}"
    settings = dict(
        duckdb_con.execute(
            "SELECT name, value FROM duckdb_settings() "
            "WHERE name IN ('autoinstall_known_extensions', 'autoload_known_extensions')"
        ).fetchall()
    )
    assert settings == {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    # iceberg's table functions are there.
    fns = {r[0] for r in duckdb_con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_name LIKE 'iceberg_%'"
    ).fetchall()}
    assert {"iceberg_scan", "iceberg_metadata", "iceberg_snapshots"} <= fns, fns


def test_standard_config_is_valid_toml():
    cfg = tomllib.loads(floe_config(12345))
    assert set(cfg) == {"server", "catalog", "streams", "sinks", "pipelines"}
    assert cfg["server"] == {"listen": "127.0.0.1:12345", "data_dir": "floe-data"}
    assert cfg["catalog"] == {"name": "floe", "warehouse": "floe-data/warehouse"}
    (stream,) = cfg["streams"]
    assert [f["name"] for f in stream["fields"]] == ["ns", "type", "id", "ts", "data", "visibility", "seq"]
    (sink,) = cfg["sinks"]
    assert sink == {
        "name": "events_table",
        "type": "iceberg",
        "table": "analytics.events",
        "partition_by": ["ns"],
        "rolling": {"interval_seconds": 1},
    }
    (pipeline,) = cfg["pipelines"]
    assert pipeline["sql"].startswith("INSERT INTO events_table SELECT ns, type, id, ts")
    assert "WHERE ns <> 'drop.me'" in pipeline["sql"]


def test_prometheus_parser():
    text = """\
# HELP floe_stream_rows_accepted_total Rows accepted.
# TYPE floe_stream_rows_accepted_total counter
floe_stream_rows_accepted_total{stream="events"} 12
floe_stream_rows_rejected_total{stream="events",reason="invalid"} 2
floe_stream_rows_rejected_total{stream="events",reason="unknown_field"} 1
floe_sink_commits_total{sink="events_table"} 3 1700000000000
floe_up 1
"""
    s = parse_prometheus(text)
    assert metric_value(s, "floe_stream_rows_accepted_total", stream="events") == 12
    assert metric_value(s, "floe_stream_rows_rejected_total", stream="events") == 3
    assert metric_value(s, "floe_sink_commits_total", sink="events_table") == 3
    assert metric_value(s, "floe_up") == 1
    assert metric_value(s, "floe_nope") is None
