"""Helpers of floe's end-to-end tests, by job.

The tests start the real `floe` binary (path in the env var FLOE_BIN), talk to it over HTTP on
127.0.0.1 only, and read the Iceberg tables it writes the way an outside user would. Every wait is
bounded; no test sends traffic anywhere but 127.0.0.1.

- `floe_e2e.events`: the event schema (`EVENT_FIELDS`, written once), generators, expected rows.
- `floe_e2e.config`: the floe.toml text the servers start with (`floe_config`), standard names.
- `floe_e2e.http`: requests and answers (`post_events`, `post_large`, `http_request`, checks of
  answers, idempotency-key headers).
- `floe_e2e.server`: `floe serve` in a temp dir (`FloeServer`), `run_floe` for CLI commands.
- `floe_e2e.tables`: reading tables back with PyIceberg (`SqlCatalog` on the SQLite file,
  `RestCatalog` on `/iceberg`), waiting for rows, exactly-once checks.
- `floe_e2e.outside`: an outside engine appending to floe's table while floe ingests.
- `floe_e2e.engines`: DuckDB with the iceberg extension, offline; `duckdb_scan`.
- `floe_e2e.metrics`: `/healthz` and `/metrics`, the Prometheus text parser.

The pytest fixtures that use these live in tests/e2e/conftest.py.
"""
