"""floe's catalog over the Iceberg REST API (`/iceberg`), used the way outside engines use it.

PyIceberg's `RestCatalog` (uri `http://127.0.0.1:PORT/iceberg`) lists and creates namespaces and
tables, appends, reads back the rows floe's pipeline wrote, and gets its proper exceptions
(`CommitFailedException` on a conflicting commit, `NoSuchTableError`, ...). What it writes is
read back through the SQLite file (PyIceberg's `SqlCatalog`): one catalog, two ways in. DuckDB's
iceberg extension ATTACHes the REST catalog and reads floe's table. Auth scopes, multi-table
transactions (all or nothing) and staged creates are checked over raw HTTP and PyIceberg.
"""

from __future__ import annotations

import json
import urllib.parse

import pyarrow as pa
import pytest

from floe_e2e.config import CATALOG_NAME
from floe_e2e.events import make_events
from floe_e2e.http import assert_accepted, http_request
from floe_e2e.outside import outside_batch
from floe_e2e.server import wait_until
from floe_e2e.tables import ids_exactly_once, read_table, rest_catalog, sql_catalog, wait_for_rows

SEP = "\x1f"


def api(server, method: str, path: str, body=None, token: str | None = None, prefixed: bool = True):
    """One raw REST call: `path` after `/iceberg/v1/{prefix}` (or `/iceberg/v1` unprefixed)."""
    base = f"{server.url}/iceberg/v1" + (f"/{CATALOG_NAME}" if prefixed else "")
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return http_request(method, base + path, data, headers)


def ns_path(*levels: str) -> str:
    return urllib.parse.quote(SEP.join(levels), safe="")


def assert_rest_error(resp, status: int, kind: str) -> dict:
    assert resp.status == status, f"want {status}, got {resp.status}: {resp.body[:500]!r}"
    err = resp.json()["error"]
    assert err["code"] == status and err["type"] == kind, err
    assert isinstance(err["message"], str) and err["message"], err
    return err


def simple_schema():
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField, StringType

    return Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "name", StringType(), required=False),
    )


def rows(ids) -> pa.Table:
    ids = list(ids)
    return pa.table({"id": pa.array(ids, pa.int64()), "name": [f"n{i}" for i in ids]})


# --- PyIceberg ----------------------------------------------------------------------------------


def test_config_names_prefix_and_every_route(floe_server):
    resp = http_request("GET", f"{floe_server.url}/iceberg/v1/config")
    assert resp.status == 200
    cfg = resp.json()
    assert cfg["overrides"] == {"prefix": CATALOG_NAME}
    assert cfg["defaults"] == {}
    eps = set(cfg["endpoints"])
    for want in (
        "GET /v1/{prefix}/namespaces", "POST /v1/{prefix}/namespaces", "HEAD /v1/{prefix}/namespaces/{namespace}",
        "POST /v1/{prefix}/namespaces/{namespace}/properties", "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
        "POST /v1/{prefix}/tables/rename", "POST /v1/{prefix}/transactions/commit",
        "POST /v1/{prefix}/namespaces/{namespace}/register",
        "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
    ):
        assert want in eps, want
    # The same catalog with and without the prefix; another prefix is not this catalog.
    assert api(floe_server, "GET", "/namespaces").json() == api(floe_server, "GET", "/namespaces", prefixed=False).json()
    assert_rest_error(http_request("GET", f"{floe_server.url}/iceberg/v1/other/namespaces"), 404, "NotFoundException")
    assert_rest_error(
        http_request("GET", f"{floe_server.url}/iceberg/v1/config?warehouse=elsewhere"), 400, "BadRequestException"
    )


def test_pyiceberg_reads_floe_rows_appends_and_sees_the_same_catalog(floe_server):
    events = make_events("floe", 12)
    assert_accepted(floe_server.post_events(events), 12)
    wait_for_rows(floe_server, 12)

    cat = rest_catalog(floe_server)
    assert ("analytics",) in cat.list_namespaces()
    assert ("analytics", "events") in cat.list_tables("analytics")
    assert cat.table_exists("analytics.events")
    table = cat.load_table("analytics.events")
    got = table.scan().to_arrow()
    assert sorted(got.column("id").to_pylist()) == sorted(e["id"] for e in events)

    # Append through REST; floe's own sink and the SQLite file see it.
    batch = outside_batch(table, 1)
    table.append(batch)
    more = make_events("floe2", 8)
    assert_accepted(floe_server.post_events(more), 8)
    want = [e["id"] for e in events + more] + batch.column("id").to_pylist()
    ids_exactly_once(wait_for_rows(floe_server, len(want), settle=1.5), want)
    ids_exactly_once(cat.load_table("analytics.events").scan().to_arrow(), want)
    # floe's sink position is untouched by the outside commit.
    assert sink_position(floe_server) == 20

    # An outside commit cannot move floe's position by carrying floe's snapshot-summary keys.
    from pyiceberg.exceptions import BadRequestError

    forged = {"floe.pipeline": "events_to_table", "floe.sink": "events_table",
              "floe.position.from": "20", "floe.position.to": "1000"}
    with pytest.raises(BadRequestError, match="floe"):
        cat.load_table("analytics.events").append(outside_batch(table, 2), snapshot_properties=forged)
    assert sink_position(floe_server) == 20
    ids_exactly_once(cat.load_table("analytics.events").scan().to_arrow(), want)


def sink_position(server) -> int:
    engine = sql_catalog(server).engine
    try:
        with engine.connect() as c:
            from sqlalchemy import text

            (pos,) = c.execute(text("SELECT position FROM floe_sink_positions")).one()
    finally:
        engine.dispose()
    return pos


def test_pyiceberg_namespaces_and_tables_lifecycle(floe_server):
    from pyiceberg.exceptions import (
        NamespaceAlreadyExistsError,
        NamespaceNotEmptyError,
        NoSuchNamespaceError,
        NoSuchTableError,
        TableAlreadyExistsError,
    )

    cat = rest_catalog(floe_server)
    cat.create_namespace("ext", {"owner": "data-team"})
    cat.create_namespace(("ext", "sub"))
    with pytest.raises(NamespaceAlreadyExistsError):
        cat.create_namespace("ext")
    assert ("ext",) in cat.list_namespaces()
    assert cat.list_namespaces("ext") == [("ext", "sub")]
    assert cat.load_namespace_properties("ext") == {"owner": "data-team"}
    summary = cat.update_namespace_properties("ext", removals={"owner", "nope"}, updates={"tier": "gold"})
    assert summary.removed == ["owner"] and summary.missing == ["nope"] and summary.updated == ["tier"]
    assert cat.load_namespace_properties("ext") == {"tier": "gold"}
    with pytest.raises(NoSuchNamespaceError):
        cat.load_namespace_properties("nope")
    with pytest.raises(NoSuchNamespaceError):
        cat.list_tables("nope")

    t = cat.create_table(("ext", "sub", "people"), schema=simple_schema())
    with pytest.raises(TableAlreadyExistsError):
        cat.create_table(("ext", "sub", "people"), schema=simple_schema())
    t.append(rows(range(5)))
    # The SQLite file sees the REST-created table and its rows.
    assert sorted(read_table(floe_server, "ext.sub.people").column("id").to_pylist()) == list(range(5))
    assert cat.list_tables(("ext", "sub")) == [("ext", "sub", "people")]

    with pytest.raises(NamespaceNotEmptyError):
        cat.drop_namespace(("ext", "sub"))
    with pytest.raises(NamespaceNotEmptyError):
        cat.drop_namespace("ext")  # has a child namespace
    with pytest.raises(NoSuchTableError):
        cat.load_table("ext.sub.nope")

    cat.rename_table("ext.sub.people", "ext.persons")
    assert not cat.table_exists("ext.sub.people")
    assert sorted(cat.load_table("ext.persons").scan().to_arrow().column("id").to_pylist()) == list(range(5))
    with pytest.raises(NoSuchTableError):
        cat.rename_table("ext.sub.people", "ext.again")

    location = cat.load_table("ext.persons").metadata_location
    cat.drop_table("ext.persons")
    assert not cat.table_exists("ext.persons")
    # Dropped without purge: the files are still there, so the table can be registered back.
    back = cat.register_table("ext.persons_back", location)
    assert sorted(back.scan().to_arrow().column("id").to_pylist()) == list(range(5))
    with pytest.raises(TableAlreadyExistsError):
        cat.register_table("ext.persons_back", location)

    # Purge deletes the files.
    table_dir = back.location().removeprefix("file://")
    import pathlib

    assert pathlib.Path(table_dir).exists()
    cat.purge_table("ext.persons_back")
    assert not pathlib.Path(table_dir, "data").exists() or not any(pathlib.Path(table_dir, "data").rglob("*.parquet"))
    cat.drop_namespace(("ext", "sub"))
    cat.drop_namespace("ext")
    assert ("ext",) not in cat.list_namespaces()


def test_conflicting_commits_raise_commit_failed(floe_server):
    from pyiceberg.exceptions import CommitFailedException

    cat = rest_catalog(floe_server)
    cat.create_namespace("c")
    # Without client-side retries the lost race surfaces as CommitFailedException (409).
    cat.create_table("c.t", schema=simple_schema(), properties={"commit.retry.num-retries": "0"})
    a = cat.load_table("c.t")
    b = cat.load_table("c.t")
    a.append(rows([1, 2]))
    with pytest.raises(CommitFailedException):
        b.append(rows([3]))
    # A reload sees the first commit; the retry lands.
    b = cat.load_table("c.t")
    b.append(rows([3]))
    assert sorted(cat.load_table("c.t").scan().to_arrow().column("id").to_pylist()) == [1, 2, 3]

    # With PyIceberg's default retries, the 409 makes it refresh and re-apply: both appends land.
    cat.create_table("c.u", schema=simple_schema())
    a = cat.load_table("c.u")
    b = cat.load_table("c.u")
    a.append(rows([1]))
    b.append(rows([2]))
    assert sorted(cat.load_table("c.u").scan().to_arrow().column("id").to_pylist()) == [1, 2]

    # A stale requirement over raw HTTP: 409 in the spec's shape, nothing changed.
    before = cat.load_table("c.u").metadata_location
    stale = {"requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 1}],
             "updates": [{"action": "set-properties", "updates": {"x": "y"}}]}
    assert_rest_error(api(floe_server, "POST", "/namespaces/c/tables/u", stale), 409, "CommitFailedException")
    assert cat.load_table("c.u").metadata_location == before


def test_staged_create_with_pyiceberg_transaction(floe_server):
    cat = rest_catalog(floe_server)
    cat.create_namespace("st")
    tx = cat.create_table_transaction("st.staged", schema=simple_schema(), properties={"k": "v"})
    assert not cat.table_exists("st.staged")  # staged: nothing in the catalog yet
    tx.append(rows([7, 8]))
    tx.commit_transaction()
    t = cat.load_table("st.staged")
    assert t.properties["k"] == "v"
    assert sorted(t.scan().to_arrow().column("id").to_pylist()) == [7, 8]
    assert sorted(read_table(floe_server, "st.staged").column("id").to_pylist()) == [7, 8]


def test_multi_table_transaction_is_all_or_nothing(floe_server):
    cat = rest_catalog(floe_server)
    cat.create_namespace("tx")
    for name in ("a", "b"):
        cat.create_table(f"tx.{name}", schema=simple_schema())
    uuid_a = cat.load_table("tx.a").metadata.table_uuid
    uuid_b = cat.load_table("tx.b").metadata.table_uuid

    def change(name, uuid, value):
        return {
            "identifier": {"namespace": ["tx"], "name": name},
            "requirements": [{"type": "assert-table-uuid", "uuid": str(uuid)}],
            "updates": [{"action": "set-properties", "updates": {"marker": value}}],
        }

    # One requirement fails: neither table changes.
    bad = change("b", "00000000-0000-0000-0000-000000000000", "x")
    resp = api(floe_server, "POST", "/transactions/commit", {"table-changes": [change("a", uuid_a, "x"), bad]})
    assert_rest_error(resp, 409, "CommitFailedException")
    assert "marker" not in cat.load_table("tx.a").properties
    assert "marker" not in cat.load_table("tx.b").properties
    # A missing table: 404, nothing changes.
    missing = {"identifier": {"namespace": ["tx"], "name": "zz"}, "requirements": [], "updates": []}
    resp = api(floe_server, "POST", "/transactions/commit", {"table-changes": [change("a", uuid_a, "x"), missing]})
    assert_rest_error(resp, 404, "NoSuchTableException")
    assert "marker" not in cat.load_table("tx.a").properties

    resp = api(floe_server, "POST", "/transactions/commit",
               {"table-changes": [change("a", uuid_a, "1"), change("b", uuid_b, "2")]})
    assert resp.status == 204, resp.body
    assert cat.load_table("tx.a").properties["marker"] == "1"
    assert cat.load_table("tx.b").properties["marker"] == "2"


def test_bad_requests_get_the_spec_error_shape(floe_server):
    assert_rest_error(api(floe_server, "POST", "/namespaces", b"{not json"), 400, "BadRequestException")
    assert_rest_error(api(floe_server, "POST", "/namespaces", {"namespace": []}), 400, "BadRequestException")
    assert_rest_error(api(floe_server, "POST", "/namespaces", {"namespace": [".."]}), 400, "BadRequestException")
    assert_rest_error(api(floe_server, "GET", "/namespaces?pageSize=0"), 400, "BadRequestException")
    assert_rest_error(api(floe_server, "GET", "/namespaces/nope"), 404, "NoSuchNamespaceException")
    assert_rest_error(api(floe_server, "GET", "/namespaces/nope/tables/t"), 404, "NoSuchTableException")
    assert api(floe_server, "HEAD", "/namespaces/nope").status == 404
    api(floe_server, "POST", "/namespaces", {"namespace": ["e"]})
    assert api(floe_server, "HEAD", "/namespaces/e").status == 204
    assert_rest_error(api(floe_server, "POST", "/namespaces", {"namespace": ["e"]}), 409, "AlreadyExistsException")
    assert_rest_error(api(floe_server, "DELETE", "/namespaces/e/tables/t?purgeRequested=maybe"), 400,
                      "BadRequestException")
    assert_rest_error(api(floe_server, "POST", "/namespaces/e/properties",
                          {"removals": ["k"], "updates": {"k": "v"}}), 422, "UnprocessableEntityException")
    assert_rest_error(api(floe_server, "GET", "/namespaces/e/nothing-here"), 404, "NotFoundException")


def test_paging_lists_every_namespace_once(floe_server):
    cat = rest_catalog(floe_server)
    names = [f"p{i:02d}" for i in range(7)]
    for n in names:
        cat.create_namespace(n)
    names = sorted(names + ["analytics"])  # floe's sink made its namespace at start
    seen, token, pages = [], "", 0
    while token is not None:
        resp = api(floe_server, "GET", f"/namespaces?pageSize=3&pageToken={urllib.parse.quote(token)}")
        assert resp.status == 200
        body = resp.json()
        assert len(body["namespaces"]) <= 3
        seen += [n[0] for n in body["namespaces"]]
        token = body.get("next-page-token")
        pages += 1
    assert seen == names and pages == 3
    # Without a pageToken, pageSize is not a page: the whole list, no next-page-token.
    whole = api(floe_server, "GET", "/namespaces?pageSize=2").json()
    assert [n[0] for n in whole["namespaces"]] == names and whole["next-page-token"] is None
    # PyIceberg pages by itself when the server answers next-page-token.
    assert [n[0] for n in cat.list_namespaces()] == names
    assert_rest_error(api(floe_server, "GET", "/namespaces?pageToken=%21%21"), 400, "BadRequestException")


# --- DuckDB -------------------------------------------------------------------------------------


def test_duckdb_attaches_the_rest_catalog(floe_server, duckdb_con):
    events = make_events("duck", 15)
    assert_accepted(floe_server.post_events(events), 15)
    wait_for_rows(floe_server, 15)
    duckdb_con.execute(
        f"ATTACH '' AS c (TYPE iceberg, ENDPOINT '{floe_server.url}/iceberg', AUTHORIZATION_TYPE 'none')"
    )
    got = duckdb_con.execute("SELECT id FROM c.analytics.events ORDER BY id").fetchall()
    assert [r[0] for r in got] == sorted(e["id"] for e in events)
    tables = duckdb_con.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'c'").fetchall()
    assert ("analytics", "events") in tables


# --- auth ---------------------------------------------------------------------------------------

TOKENS = """
[[auth.tokens]]
token = "reader-token"
scopes = ["read"]

[[auth.tokens]]
token = "writer-token"
scopes = ["write"]

[[auth.tokens]]
token = "admin-token"
scopes = ["admin"]

[[auth.tokens]]
token = "sender-token"
scopes = ["send:events"]
"""


def test_auth_scopes(floe_server_factory):
    from pyiceberg.exceptions import ForbiddenError

    server = floe_server_factory(extra=TOKENS)
    # Missing or unknown token: 401 on every route, reads included.
    assert_rest_error(http_request("GET", f"{server.url}/iceberg/v1/config"), 401, "NotAuthorizedException")
    assert_rest_error(api(server, "GET", "/namespaces", token="nope"), 401, "NotAuthorizedException")
    assert_rest_error(api(server, "GET", "/namespaces", token="None"), 401, "NotAuthorizedException")
    # A token without a catalog scope: 403.
    assert_rest_error(api(server, "GET", "/namespaces", token="sender-token"), 403, "ForbiddenException")
    # read: list and load; not create.
    assert api(server, "GET", "/namespaces", token="reader-token").status == 200
    assert_rest_error(api(server, "POST", "/namespaces", {"namespace": ["r"]}, token="reader-token"), 403,
                      "ForbiddenException")
    reader = rest_catalog(server, token="reader-token")
    with pytest.raises(ForbiddenError):
        reader.create_namespace("r")
    # write and admin: create, and read too.
    writer = rest_catalog(server, token="writer-token")
    writer.create_namespace("w")
    writer.create_table("w.t", schema=simple_schema()).append(rows([1]))
    assert reader.load_table("w.t").scan().to_arrow().num_rows == 1
    admin = rest_catalog(server, token="admin-token")
    admin.drop_table("w.t")
    assert writer.list_tables("w") == []
    with pytest.raises(ForbiddenError):
        reader.drop_namespace("w")


def test_no_tokens_serves_bearer_none(floe_server):
    # PyIceberg without a token sends `Authorization: Bearer None` in some versions.
    assert api(floe_server, "GET", "/namespaces", token="None").status == 200
    assert api(floe_server, "POST", "/namespaces", {"namespace": ["n"]}, token="None").status == 200
    assert ("n",) in rest_catalog(floe_server).list_namespaces()


# --- floe catalog -------------------------------------------------------------------------------


def test_floe_catalog_prints_snippets_that_work(floe_server, duckdb_con):
    import re

    from floe_e2e.server import run_floe

    events = make_events("cli", 5)
    assert_accepted(floe_server.post_events(events), 5)
    wait_for_rows(floe_server, 5)
    out = run_floe("catalog", "--config", floe_server.config_path, cwd=floe_server.workdir)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    uri = f"{floe_server.url}/iceberg"
    assert f"Iceberg REST catalog:         {uri}" in text, text
    assert f"spark.sql.catalog.{CATALOG_NAME}.type=rest" in text and f".uri={uri}" in text, text
    assert "SqlCatalog(" in text and "JdbcCatalog" in text, text  # the SQLite-file way is still there
    # The PyIceberg snippet, as printed, connects.
    (snippet_uri,) = re.findall(r'RestCatalog\("floe", uri="([^"]+)"\)', text)
    from pyiceberg.catalog.rest import RestCatalog

    assert ("analytics", "events") in RestCatalog(CATALOG_NAME, uri=snippet_uri).list_tables("analytics")
    # The DuckDB ATTACH line, as printed, reads the table.
    (attach,) = [line.strip() for line in text.splitlines() if line.strip().startswith("ATTACH ")]
    duckdb_con.execute(attach)
    assert duckdb_con.execute(f"SELECT count(*) FROM {CATALOG_NAME}.analytics.events").fetchone()[0] == 5


# --- hardening (issue 10): what engines do, and what a careless client must not do ---------------


def test_staged_create_keeps_every_update_of_the_transaction(floe_server):
    """create_table_transaction + add_column (+ a partition spec on the new column) in one
    commit: every update lands with the ids the client saw (once the added column was lost, or
    the commit failed with "Cannot find partition source field with id 3")."""
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import IntegerType

    cat = rest_catalog(floe_server)
    cat.create_namespace("stx")
    tx = cat.create_table_transaction("stx.cols", schema=simple_schema())
    with tx.update_schema() as update:
        update.add_column("extra", IntegerType())
    tx.commit_transaction()
    t = cat.load_table("stx.cols")
    assert [f.name for f in t.schema().fields] == ["id", "name", "extra"]
    assert t.schema().find_field("extra").field_id == 3

    tx = cat.create_table_transaction("stx.parts", schema=simple_schema())
    with tx.update_schema() as update:
        update.add_column("bucket", IntegerType())
    with tx.update_spec() as spec:
        spec.add_field("bucket", IdentityTransform(), "bucket")
    tx.commit_transaction()
    t = cat.load_table("stx.parts")
    field = t.spec().fields[0]
    assert field.source_id == t.schema().find_field("bucket").field_id == 3
    t.append(pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["a", "b"],
                       "bucket": pa.array([7, 8], pa.int32())}))
    assert sorted(cat.load_table("stx.parts").scan().to_arrow().column("bucket").to_pylist()) == [7, 8]


def test_a_dotted_namespace_level_is_one_level(floe_server):
    resp = api(floe_server, "POST", "/namespaces", {"namespace": ["new.db"], "properties": {"k": "v"}})
    assert resp.status == 200, resp.body
    top = api(floe_server, "GET", "/namespaces").json()["namespaces"]
    assert ["new.db"] in top and ["new"] not in top
    assert api(floe_server, "GET", f"/namespaces/{ns_path('new.db')}").json()["properties"] == {"k": "v"}
    assert_rest_error(api(floe_server, "GET", f"/namespaces/{ns_path('new', 'db')}"), 404, "NoSuchNamespaceException")
    body = {"name": "t", "schema": {"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "id", "required": False, "type": "long"}]}}
    resp = api(floe_server, "POST", f"/namespaces/{ns_path('new.db')}/tables", body)
    assert resp.status == 200, resp.body
    assert resp.json()["metadata"]["location"] == f"file://{floe_server.warehouse}/new.db/t"
    ids = api(floe_server, "GET", f"/namespaces/{ns_path('new.db')}/tables").json()["identifiers"]
    assert ids == [{"namespace": ["new.db"], "name": "t"}]
    # Stored escaped in the JDBC layout's dotted column; plain names stay as they were.
    def rows():
        engine = sql_catalog(floe_server).engine
        try:
            from sqlalchemy import text

            with engine.connect() as c:
                return [tuple(r) for r in c.execute(text("SELECT table_namespace, table_name FROM iceberg_tables"))]
        finally:
            engine.dispose()

    assert ("new%2Edb", "t") in rows()
    # The pipeline's sink creates analytics.events when its runner starts, which may be after
    # the server first answers.
    wait_until(lambda: ("analytics", "events") in rows(), 30, "the sink's table row")


def test_names_and_locations_are_confined_to_the_warehouse(floe_server, tmp_path):
    import os
    import pathlib

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    api(floe_server, "POST", "/namespaces", {"namespace": ["h"]})
    schema = {"type": "struct", "schema-id": 0, "fields": [{"id": 1, "name": "id", "required": False, "type": "long"},
                                                           {"id": 2, "name": "name", "required": False, "type": "string"}]}
    for bad in ["..", ".", "a/b", "a\\b", "x" * 256, "a\u0000b"]:
        err = assert_rest_error(api(floe_server, "POST", "/namespaces/h/tables", {"name": bad, "schema": schema}),
                                400, "BadRequestException")
        assert "names are 1 to 255 bytes" in err["message"], err
    assert_rest_error(api(floe_server, "POST", "/namespaces", {"namespace": [".."]}), 400, "BadRequestException")
    wh = f"file://{floe_server.warehouse}"
    for location in [str(floe_server.data_dir), f"file://{floe_server.data_dir}", wh, f"{wh}/../streams",
                     f"{wh}/h/%2e%2e/%2e%2e/streams", str(precious), "file://elsewhere/x"]:
        for stage in (False, True):
            err = assert_rest_error(
                api(floe_server, "POST", "/namespaces/h/tables",
                    {"name": "t", "schema": schema, "location": location, "stage-create": stage}),
                400, "BadRequestException")
            assert "strictly inside the catalog's warehouse" in err["message"], err
            # The location is quoted as sent; no other (resolved) host path appears.
            assert str(tmp_path) not in err["message"].replace(json.dumps(location), ""), err
    # A table created inside, then moved out by a commit: refused, nothing changed.
    t = api(floe_server, "POST", "/namespaces/h/tables", {"name": "t", "schema": schema}).json()
    for update in [{"action": "set-location", "location": str(precious)},
                   {"action": "set-properties", "updates": {"write.data.path": str(floe_server.data_dir)}}]:
        assert_rest_error(api(floe_server, "POST", "/namespaces/h/tables/t", {"requirements": [], "updates": [update]}),
                          400, "BadRequestException")
    assert api(floe_server, "GET", "/namespaces/h/tables/t").json()["metadata-location"] == t["metadata-location"]

    # Register: device files, FIFOs, directories and files outside are 400 at once (never a hang
    # or an out-of-memory), and the contents of a file are never echoed.
    junk = floe_server.warehouse / "h" / "junk"
    junk.mkdir(parents=True)
    os.mkfifo(junk / "fifo.metadata.json")
    os.symlink("/dev/zero", junk / "zero.metadata.json")
    for location in ["/dev/zero", "file:///etc/passwd", str(junk / "fifo.metadata.json"),
                     str(junk / "zero.metadata.json"), str(junk), f"{wh}/h/t/metadata/../../../../streams"]:
        err = assert_rest_error(api(floe_server, "POST", "/namespaces/h/register",
                                    {"name": "r", "metadata-location": location}), 400, "BadRequestException")
        assert "root:" not in err["message"], err
    assert api(floe_server, "HEAD", "/namespaces/h/tables/r").status == 404

    # Purge deletes what the table references, under its location; a file it does not
    # reference stays, and so does everything of floe's.
    cat = rest_catalog(floe_server)
    table = cat.load_table("h.t")
    table.append(rows([1, 2, 3]))
    table_dir = pathlib.Path(table.location().removeprefix("file://"))
    stray = table_dir / "data" / "stray.txt"
    stray.write_text("not referenced")
    streams_before = sorted(p.name for p in (floe_server.data_dir / "streams").rglob("*"))
    assert api(floe_server, "DELETE", "/namespaces/h/tables/t?purgeRequested=true").status == 204
    assert stray.is_file()
    assert not list(table_dir.rglob("*.parquet")) and not list(table_dir.rglob("*.metadata.json"))
    assert sorted(p.name for p in (floe_server.data_dir / "streams").rglob("*")) == streams_before
    assert floe_server.catalog_db.is_file()
    assert (precious / "keep.txt").read_text() == "keep"
    assert http_request("GET", f"{floe_server.url}/healthz").json()["status"] == "ok"


def test_conflicts_use_the_java_wording(floe_server):
    cat = rest_catalog(floe_server)
    cat.create_namespace("cw")
    t = cat.create_table("cw.t", schema=simple_schema())
    t.append(rows([1]))
    snap = cat.load_table("cw.t").current_snapshot().snapshot_id
    cases = [
        ({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": 1},
         f"Requirement failed: branch main has changed: expected id 1 != {snap}"),
        ({"type": "assert-current-schema-id", "current-schema-id": 4},
         "Requirement failed: current schema changed: expected id 4 != 0"),
        ({"type": "assert-default-spec-id", "default-spec-id": 3},
         "Requirement failed: default partition spec changed: expected id 3 != 0"),
        ({"type": "assert-last-assigned-field-id", "last-assigned-field-id": 9},
         "Requirement failed: last assigned field id changed: expected id 9 != 2"),
        ({"type": "assert-create"}, "Requirement failed: table already exists"),
    ]
    for requirement, message in cases:
        body = {"requirements": [requirement], "updates": [{"action": "set-properties", "updates": {"x": "y"}}]}
        err = assert_rest_error(api(floe_server, "POST", "/namespaces/cw/tables/t", body), 409, "CommitFailedException")
        assert err["message"] == message, err


def test_a_failed_sqlite_commit_is_commit_state_unknown(floe_server):
    """The SQLite COMMIT itself fails (here: a deferred foreign key another client of the file
    added, checked only at COMMIT): the answer is 500 CommitStateUnknownException, and the
    metadata file written for the commit is kept."""
    import sqlite3

    cat = rest_catalog(floe_server)
    cat.create_namespace("cu")
    t = cat.create_table("cu.t", schema=simple_schema())
    before = t.metadata_location
    con = sqlite3.connect(floe_server.catalog_db, timeout=30)
    try:
        con.executescript("""
            CREATE TABLE fail_parent (id INTEGER PRIMARY KEY);
            CREATE TABLE fail_child (pid INTEGER REFERENCES fail_parent(id) DEFERRABLE INITIALLY DEFERRED);
            CREATE TRIGGER fail_commit AFTER UPDATE ON iceberg_tables BEGIN INSERT INTO fail_child VALUES (1); END;
        """)
    finally:
        con.close()
    import pathlib

    metadata_dir = pathlib.Path(t.location().removeprefix("file://")) / "metadata"
    files_before = set(metadata_dir.iterdir())
    body = {"requirements": [], "updates": [{"action": "set-properties", "updates": {"x": "y"}}]}
    err = assert_rest_error(api(floe_server, "POST", "/namespaces/cu/tables/t", body), 500,
                            "CommitStateUnknownException")
    assert "may or may not have landed" in err["message"], err
    kept = set(metadata_dir.iterdir()) - files_before
    assert len(kept) == 1 and next(iter(kept)).name.startswith("00001-"), kept
    assert cat.load_table("cu.t").metadata_location == before  # here it did not land
    from pyiceberg.exceptions import CommitStateUnknownException

    with pytest.raises(CommitStateUnknownException):
        cat.load_table("cu.t").transaction().set_properties(a="b").commit_transaction()


def test_an_oversized_body_is_413(floe_server):
    """A body declared over the 8 MiB REST limit is refused before it is read."""
    import socket

    with socket.create_connection(("127.0.0.1", floe_server.port), timeout=30) as sock:
        sock.sendall(
            f"POST /iceberg/v1/namespaces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {9 * 1024 * 1024}\r\nConnection: close\r\n\r\n".encode()
        )
        sock.sendall(b'{"namespace": ["x"], "properties": {"k": "' + b"v" * 4096)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"REST limit" in body, body
    assert api(floe_server, "HEAD", "/namespaces/x").status == 404
