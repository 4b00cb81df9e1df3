"""The peer: the same events floe-load sends, appended to an Iceberg table by a plain PyIceberg
script — `pyarrow.json.read_json` on each 1,000-event request body, then `table.append` (one
commit per batch), on a SqlCatalog (SQLite) in a temporary folder.

    python pyiceberg_append.py [seconds] [batch] [partition]

`partition` is `ns` (identity on `ns`, the default) or `none` (unpartitioned: the peer's best
case, which scripts/bench.sh runs at 1,000, 10,000 and 50,000 events per append). The bodies
are built once before the clock starts, at most ~80 MB of them. Prints `BENCH pyiceberg_…`
lines. The one difference from floe's table: `data` (a JSON object)
is stored as the struct pyarrow parses it into, not as JSON text (less work for the peer).
"""

import io
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.json as pj
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import IdentityTransform

TYPES = ["function", "bucket", "database", "queue", "topic"]
VIS = ["public", "private", "team"]


def event(n: int) -> str:
    # Byte for byte floe::loadgen::event_json.
    return (
        f'{{"ns":"tenant-{n % 50:02}.example.com","type":"{TYPES[n % 5]}","id":"res-{n:09}",'
        f'"ts":"2026-11-26T10:{(n // 60) % 60:02}:{n % 60:02}.{n % 1_000_000:06}Z",'
        f'"data":{{"size":{n % 10_000},"region":"eu-west-{n % 3}"}},"visibility":"{VIS[n % 3]}"}}'
    )


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    partition = sys.argv[3] if len(sys.argv) > 3 else "ns"
    if partition not in ("ns", "none"):
        sys.exit(f"partition must be ns or none, not {partition!r}")
    count = max(2, min(64, 80_000_000 // (batch * 170)))
    bodies = ["\n".join(event(i * batch + j) for j in range(batch)).encode() for i in range(count)]
    schema = pa.schema([
        ("ns", pa.string()), ("type", pa.string()), ("id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("data", pa.struct([("size", pa.int64()), ("region", pa.string())])),
        ("visibility", pa.string()),
    ])
    parse = pj.ParseOptions(explicit_schema=schema)
    with tempfile.TemporaryDirectory() as d:
        catalog = SqlCatalog("peer", uri=f"sqlite:///{d}/catalog.db", warehouse=f"file://{d}/warehouse")
        catalog.create_namespace("analytics")
        first = pj.read_json(io.BytesIO(bodies[0]), parse_options=parse)
        table = catalog.create_table("analytics.events", schema=first.schema)
        if partition == "ns":
            with table.update_spec() as spec:
                spec.add_field("ns", IdentityTransform(), "ns")
        table = catalog.load_table("analytics.events")
        rows = nbytes = 0
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            body = bodies[i % len(bodies)]
            i += 1
            t = pj.read_json(io.BytesIO(body), parse_options=parse)
            table.append(t)
            rows += t.num_rows
            nbytes += len(body)
        elapsed = time.perf_counter() - start
        stored = catalog.load_table("analytics.events").scan().to_arrow().num_rows
        assert stored == rows, f"{stored} rows in the table, {rows} appended"
        print(f"pyiceberg: {i} appends of {batch} events, {rows} rows in {elapsed:.1f} s, partition {partition}")
        print(f"BENCH pyiceberg_rows_per_s={rows / elapsed:.2f} unit=rows/s")
        print(f"BENCH pyiceberg_mb_per_s={nbytes / elapsed / 1e6:.2f} unit=MB/s")


if __name__ == "__main__":
    main()
