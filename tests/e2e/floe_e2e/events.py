"""The test events: their schema, generators, and the rows the default pipeline makes of them.

`EVENT_FIELDS` is the one definition of the test streams' schema (`events`, and `other` of
`config.two_stream_extra`). The floe.toml `fields` text (`config.EVENT_FIELDS_TOML`), the default
pipeline's SELECT (`PIPELINE_SELECT`), the table's columns (`TABLE_COLUMNS`) and the expected rows
(`expected_row`) are all derived from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Field:
    """One entry of a stream's `fields` in floe.toml (docs/config.md, "Field types")."""

    name: str
    type: str
    required: bool = False


#: The `fields` of the test streams, in order.
EVENT_FIELDS: tuple[Field, ...] = (
    Field("ns", "string", required=True),
    Field("type", "string", required=True),
    Field("id", "string", required=True),
    Field("ts", "timestamp", required=True),
    Field("data", "json"),
    Field("visibility", "string"),
    Field("seq", "int64"),
)

#: The names of `EVENT_FIELDS`, in order.
EVENT_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in EVENT_FIELDS)

#: What the default pipeline selects from a test stream: every field, then `type_upper`.
PIPELINE_SELECT = "SELECT " + ", ".join([*EVENT_FIELD_NAMES, "upper(type) AS type_upper"])

#: Events in this namespace are filtered out by the default pipeline (`WHERE ns <> 'drop.me'`).
DROPPED_NS = "drop.me"

#: The columns of analytics.events, as the default pipeline writes them.
TABLE_COLUMNS = [*EVENT_FIELD_NAMES, "type_upper"]

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
    """The analytics.events row the default pipeline makes from one accepted event.

    Every field of `EVENT_FIELDS` as sent (a missing optional one is None), `ts` as the instant it
    denotes, then `type_upper`.
    """
    row = {f.name: event[f.name] if f.required else event.get(f.name) for f in EVENT_FIELDS}
    row["ts"] = parse_ts(event["ts"])
    row["type_upper"] = event["type"].upper()
    return row


def expected_rows(events: Iterable[dict]) -> list[dict]:
    """Expected table rows (after the pipeline's WHERE), sorted by id."""
    return sorted((expected_row(e) for e in events if e["ns"] != DROPPED_NS), key=lambda r: r["id"])
