"""The floe.toml text the test servers start with, and the names of the standard setup.

`floe_config(port, ...)` writes the standard config (stream `events` -> pipeline `events_to_table`
-> sink `events_table` -> table `analytics.events`); tests vary it through its keyword arguments.
The keys are those of docs/config.md.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from .events import DROPPED_NS, EVENT_FIELDS, PIPELINE_SELECT, Field

#: The only address the tests talk to.
LOOPBACK = "127.0.0.1"
STREAM = "events"
SINK = "events_table"
TABLE = "analytics.events"
CATALOG_NAME = "floe"

#: The SQL of the standard pipeline `events_to_table`.
DEFAULT_PIPELINE_SQL = f"INSERT INTO {SINK} {PIPELINE_SELECT} FROM {STREAM} WHERE ns <> '{DROPPED_NS}'"


def fields_toml(fields: Iterable[Field]) -> str:
    """A stream's `fields = [...]` array in floe.toml, one inline table per line."""
    lines = []
    for f in fields:
        required = ", required = true" if f.required else ""
        lines.append(f"  {{ name = {json.dumps(f.name)}, type = {json.dumps(f.type)}{required} }},\n")
    return "fields = [\n" + "".join(lines) + "]"


#: The `fields` of the test streams (`events`, and `other` of `two_stream_extra`), as TOML.
EVENT_FIELDS_TOML = fields_toml(EVENT_FIELDS)


def settings_toml(port: int, *, data_dir: str = "floe-data", catalog_name: str = CATALOG_NAME) -> str:
    """A floe.toml with settings only — no stream, sink or pipeline (they are added through the
    control plane, docs/control-plane.md, or appended by the caller)."""
    return f"""\
[server]
listen = "{LOOPBACK}:{port}"
data_dir = {json.dumps(data_dir)}

[catalog]
name = {json.dumps(catalog_name)}
warehouse = {json.dumps(data_dir + "/warehouse")}
"""


def floe_config(
    port: int,
    *,
    data_dir: str = "floe-data",
    warehouse: str = "floe-data/warehouse",
    catalog_name: str = CATALOG_NAME,
    catalog_uri: str | None = None,
    interval_seconds: int = 1,
    partition_by: Iterable[str] = ("ns",),
    pipeline_sql: str = DEFAULT_PIPELINE_SQL,
    stream_extra: str = "",
    sink_extra: str = "",
    extra: str = "",
    limits: dict[str, Any] | None = None,
    rolling: dict[str, Any] | None = None,
) -> str:
    """The floe.toml text for the standard test setup (keys from docs/config.md).

    `catalog_uri`, when given, becomes `[catalog] uri` (a catalog database other than the SQLite
    file `<data_dir>/catalog.db`; floe does not have that key yet and refuses it); omitted, the
    file has no `uri` key and the catalog is the SQLite file.
    `stream_extra` / `sink_extra` are extra `key = value` lines appended to the stream / sink
    tables; `extra` is appended at the end of the file (e.g. more `[[sinks]]`, or
    `two_stream_extra()`). `limits` becomes a `[limits]` table (`{"max_uncommitted_rows": 50}`);
    omitted, the file has no `[limits]` table and floe's defaults apply. `rolling` adds keys to the
    sink's `rolling = { interval_seconds = … }` table (`{"memory_mb": 16}`).
    """
    partition = ", ".join(json.dumps(p) for p in partition_by)
    uri_toml = "" if catalog_uri is None else f"uri = {json.dumps(catalog_uri)}\n"
    limits_toml = ""
    if limits:
        limits_toml = "\n[limits]\n" + "".join(f"{k} = {_toml_scalar(v)}\n" for k, v in limits.items())
    rolling_toml = "".join(f", {k} = {_toml_scalar(v)}" for k, v in (rolling or {}).items())
    return f"""\
[server]
listen = "{LOOPBACK}:{port}"
data_dir = {json.dumps(data_dir)}

[catalog]
name = {json.dumps(catalog_name)}
{uri_toml}warehouse = {json.dumps(warehouse)}
{limits_toml}
[[streams]]
name = "{STREAM}"
{EVENT_FIELDS_TOML}
{stream_extra}

[[sinks]]
name = "{SINK}"
type = "iceberg"
table = "{TABLE}"
partition_by = [{partition}]
rolling = {{ interval_seconds = {interval_seconds}{rolling_toml} }}
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


def sink_pipeline_toml(sink: str, table: str, pipeline: str, sql: str, *, interval_seconds: int = 1,
                       partition_by: Iterable[str] = ()) -> str:
    """`floe_config(extra=...)` text for one more iceberg sink writing `table` and a pipeline
    running `sql` into it."""
    partition = ""
    if partition_by:
        partition = "partition_by = [" + ", ".join(json.dumps(p) for p in partition_by) + "]\n"
    return f"""
[[sinks]]
name = "{sink}"
type = "iceberg"
table = "{table}"
{partition}rolling = {{ interval_seconds = {interval_seconds} }}

[[pipelines]]
name = "{pipeline}"
sql = {json.dumps(sql)}
"""


def files_sink_toml(sink: str, path: str, pipeline: str, sql: str, *, interval_seconds: int = 1,
                    **keys: Any) -> str:
    """`floe_config(extra=...)` text for a files sink `sink` writing under `path` (a local folder,
    relative to the server's folder, or `s3://bucket/prefix`) and a pipeline running `sql` into
    it. `keys` are more keys of the sink (docs/config.md, "Files sinks"): `format="parquet"`,
    `compression="zstd(5)"`, `partitioning="dt=%Y-%m-%d"`, `time_column="ts"`, `file_naming=...`,
    `file_prefix=...`, `file_suffix=...`."""
    more = "".join(f"{k} = {_toml_scalar(v)}\n" for k, v in keys.items())
    return f"""
[[sinks]]
name = "{sink}"
type = "files"
path = {json.dumps(path)}
{more}rolling = {{ interval_seconds = {interval_seconds} }}

[[pipelines]]
name = "{pipeline}"
sql = {json.dumps(sql)}
"""


def two_stream_extra(interval_seconds: int = 1) -> str:
    """`floe_config(extra=...)` text adding a second stream `other` (same fields as `events`),
    sink `other_table` (table analytics.other) and pipeline `other_to_table`, so a test can check
    that per-stream state (e.g. idempotency keys) is independent."""
    return f"""
[[streams]]
name = "{OTHER_STREAM}"
{EVENT_FIELDS_TOML}
""" + sink_pipeline_toml(OTHER_SINK, OTHER_TABLE, OTHER_PIPELINE,
                         f"INSERT INTO {OTHER_SINK} {PIPELINE_SELECT} FROM {OTHER_STREAM}",
                         interval_seconds=interval_seconds, partition_by=("ns",))
