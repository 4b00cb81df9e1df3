"""An outside engine appends through floe's REST catalog while floe ingests: no row lost.

PyIceberg's `RestCatalog` appends to `analytics.events` over `/iceberg` while floe's sink commits
every second. Both go through the same compare-and-swap on `metadata_location` in floe's catalog;
the REST client's lost swaps come back as `CommitFailedException` (409) and are retried on fresh
metadata, floe's sink retries its own. At the end the table holds every id that either side had
acknowledged, each exactly once, and floe's sink position equals the rows floe accepted.
"""

from floe_e2e.outside import race_with_floe
from floe_e2e.tables import ids_exactly_once, rest_catalog, wait_for_rows

#: REST appends made during the run (bounded).
OUTSIDE_APPENDS = 10


def test_rest_client_appends_while_floe_ingests(floe_server):
    from pyiceberg.exceptions import CommitFailedException

    cat = rest_catalog(floe_server)
    floe_ids, outside_ids, conflicts = race_with_floe(
        floe_server,
        lambda: cat.load_table("analytics.events"),
        OUTSIDE_APPENDS,
        retry_on=CommitFailedException,
        tries=20,
        pause=0.2,
    )
    table = wait_for_rows(floe_server, len(floe_ids) + len(outside_ids), settle=2.0)
    ids_exactly_once(table, floe_ids + outside_ids)
    print(f"REST appends: {OUTSIDE_APPENDS}, lost swaps retried: {conflicts}")
