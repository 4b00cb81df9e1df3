"""Pipeline safety against the real binary: a renamed pipeline neither repeats nor skips rows, a
log that went backwards is refused at start with the numbers, and an outside engine's
`add_column` does not stop floe's writes (before and after a restart).
"""

import shutil
import time

from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted
from floe_e2e.metrics import healthz
from floe_e2e.server import run_floe
from floe_e2e.tables import ids_exactly_once, load_table, wait_for_ids

#: Bound on a refused start (floe exits before serving).
REFUSE_TIMEOUT = 60.0


def _post(server, prefix, n):
    events = make_events(prefix, n)
    assert_accepted(server.post_events(events), n)
    return [e["id"] for e in events]


def _refused(server) -> str:
    """Runs `floe serve` on the server's config; it must exit non-zero. Returns its output."""
    proc = run_floe("serve", "--config", str(server.config_path), cwd=server.workdir, timeout=REFUSE_TIMEOUT)
    assert proc.returncode != 0, f"floe serve started:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_renamed_pipeline_then_restart_has_no_duplicates(floe_server):
    ids = _post(floe_server, "a", 30)
    wait_for_ids(floe_server, ids)
    floe_server.stop()

    text = floe_server.config_path.read_text()
    assert 'name = "events_to_table"' in text
    # Renamed without saying so: refused, naming the old pipeline and its offset.
    floe_server.config_path.write_text(text.replace('name = "events_to_table"', 'name = "renamed"'))
    out = _refused(floe_server)
    assert 'already fed by pipeline "events_to_table"' in out, out
    assert "at offset 30" in out, out

    # Renamed with replaces: continues at the old pipeline's position.
    floe_server.config_path.write_text(
        text.replace('name = "events_to_table"', 'name = "renamed"\nreplaces = "events_to_table"')
    )
    floe_server.start()
    ids += _post(floe_server, "b", 20)
    wait_for_ids(floe_server, ids)
    floe_server.restart()
    ids += _post(floe_server, "c", 10)
    table = wait_for_ids(floe_server, ids, settle=2.0)
    ids_exactly_once(table, ids)


def test_a_replaced_stream_dir_is_refused_at_start(floe_server):
    ids = _post(floe_server, "a", 25)
    wait_for_ids(floe_server, ids)
    floe_server.stop()
    shutil.rmtree(floe_server.data_dir / "streams" / "events")
    out = _refused(floe_server)
    assert "through offset 25" in out, out
    assert "ends at offset 0" in out, out
    assert "went backwards" in out, out


def test_outside_add_column_keeps_rows_landing(floe_server):
    from pyiceberg.types import StringType

    ids = _post(floe_server, "a", 20)
    wait_for_ids(floe_server, ids)

    table = load_table(floe_server)
    with table.update_schema() as update:
        update.add_column("added_outside", StringType())
    assert "added_outside" in load_table(floe_server).schema().column_names

    # At once, without a restart: floe's next commits land (the new column null) ...
    for k in range(3):
        ids += _post(floe_server, f"b{k}", 10)
        time.sleep(0.3)
    wait_for_ids(floe_server, ids)
    # ... and after one.
    floe_server.restart()
    ids += _post(floe_server, "c", 15)
    table = wait_for_ids(floe_server, ids, settle=1.5)
    ids_exactly_once(table, ids)
    added = table.column("added_outside").to_pylist()
    assert added == [None] * len(ids)
    status, body = healthz(floe_server)
    assert status == 200 and body["status"] == "ok", body
