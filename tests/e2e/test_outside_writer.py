"""An outside engine appending to floe's table while floe ingests: no row lost on either side.

PyIceberg's SqlCatalog commits to the same SQLite catalog and table (its own compare-and-swap on
`metadata_location`) while floe's sink commits every second. Both sides' commits race; a lost
swap is retried on fresh metadata. At the end the table holds floe's acknowledged rows and
PyIceberg's appended rows, each exactly once.
"""

from floe_e2e.outside import race_with_floe
from floe_e2e.tables import ids_exactly_once, load_table, wait_for_rows

#: PyIceberg appends made during the run (bounded).
OUTSIDE_APPENDS = 8


def test_pyiceberg_appends_while_floe_ingests(floe_server):
    # PyIceberg's SqlCatalog raises CommitFailedException (and friends) on a lost swap.
    floe_ids, outside_ids, _ = race_with_floe(floe_server, lambda: load_table(floe_server), OUTSIDE_APPENDS)
    table = wait_for_rows(floe_server, len(floe_ids) + len(outside_ids), settle=2.0)
    ids_exactly_once(table, floe_ids + outside_ids)
