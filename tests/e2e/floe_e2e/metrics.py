"""floe's health and metrics endpoints: `GET /healthz` and `GET /metrics` (Prometheus text).

The routes are those of README.md ("HTTP"); `parse_prometheus` is checked on its own in
test_harness.py.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .http import http_get

if TYPE_CHECKING:
    from .server import FloeServer


def healthz(server: FloeServer) -> tuple[int, Any]:
    """GET /healthz: (HTTP status, parsed JSON body)."""
    r = http_get(f"{server.url}/healthz", timeout=10.0)
    return r.status, r.json()


def metrics_samples(server: FloeServer) -> list[tuple[str, dict[str, str], float]]:
    """GET /metrics, parsed (see `parse_prometheus`)."""
    r = http_get(f"{server.url}/metrics", timeout=10.0)
    assert r.status == 200, f"GET /metrics: {r.status} {r.body[:300]!r}"
    return parse_prometheus(r.body.decode())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        samples.append((name, dict(_LABEL.findall(labels)), float(value)))
    return samples


def metric_value(samples, name: str, **labels: str) -> float | None:
    """Sum of the samples named `name` whose labels include `labels`; None when there are none."""
    hits = [v for n, ls, v in samples if n == name and all(ls.get(k) == v2 for k, v2 in labels.items())]
    return sum(hits) if hits else None
