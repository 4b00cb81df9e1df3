"""Spec conformance of floe's Iceberg REST catalog, route by route.

Every route floe lists in `GET /iceberg/v1/config` `endpoints` is called with valid and invalid
inputs (a table of cases, run in order against one live server). Each answer must have a status
the spec (`spec/rest-catalog-open-api.yaml`, apache/iceberg) documents for that operation, and its
JSON body must validate against the schema the spec gives for that status. A second server with
`[[auth.tokens]]` checks 401 (no token) and 403 (read token on a write route) on every route.

The schema check is a small JSON-Schema subset validator (type, nullable, required, properties,
additionalProperties, items, enum, const, minimum/maximum, uniqueItems, allOf/anyOf/oneOf, $ref)
— enough for the response schemas of these routes. `oneOf` is checked as `anyOf`, because the
spec's primitive-value unions overlap (an integer is both an int and a long value).
Deterministic: fixed inputs, no randomness, a few seconds.
"""

from __future__ import annotations

import collections
import json
import pathlib
import urllib.parse

import pytest
import yaml

from floe_e2e.config import CATALOG_NAME
from floe_e2e.http import http_request

SPEC_PATH = pathlib.Path(__file__).parent / "spec" / "rest-catalog-open-api.yaml"
SEP = "%1F"


@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load(SPEC_PATH.read_text())


# --- a JSON-Schema subset -------------------------------------------------------------------------


def _resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target = spec
        for part in ref[2:].split("/"):
            target = target[part]
        # Sibling keywords next to $ref (OpenAPI allows e.g. `const`) apply too.
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **extra} if extra else target
    return node


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(spec, schema, value, path="$") -> list[str]:
    """Why `value` does not validate against `schema` (empty when it does)."""
    schema = _resolve(spec, schema)
    errors: list[str] = []
    if value is None and schema.get("nullable"):
        return []
    for sub in schema.get("allOf", []):
        errors += schema_errors(spec, sub, value, path)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [schema_errors(spec, s, value, path) for s in schema[key]]
            if all(branches):
                errors.append(f"{path}: matches no {key} branch ({min(branches, key=len)[0]})")
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        if not any(_TYPES[t](value) for t in types):
            return errors + [f"{path}: {value!r:.80} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} != {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in value:
                errors.append(f"{path}: missing required {req!r}")
        for k, v in value.items():
            if k in props:
                errors += schema_errors(spec, props[k], v, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(spec, schema["additionalProperties"], v, f"{path}.{k}")
    if isinstance(value, list):
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(spec, schema["items"], item, f"{path}[{i}]")
        if schema.get("uniqueItems"):
            seen = [json.dumps(v, sort_keys=True) for v in value]
            if len(seen) != len(set(seen)):
                errors.append(f"{path}: items are not unique")
    return errors


def test_the_validator_rejects_what_it_should(spec):
    err = {"$ref": "#/components/schemas/IcebergErrorResponse"}
    assert not schema_errors(spec, err, {"error": {"message": "m", "type": "T", "code": 404}})
    assert schema_errors(spec, err, {"error": {"message": "m", "type": "T"}})  # no code
    assert schema_errors(spec, err, {"error": {"message": "m", "type": "T", "code": 200}})  # < 400
    assert schema_errors(spec, err, {"error": {"message": "m", "type": "T", "code": 404}, "extra": 1})
    ns = {"$ref": "#/components/schemas/ListNamespacesResponse"}
    assert schema_errors(spec, ns, {"namespaces": [["a"], ["a"]]})  # not unique
    assert schema_errors(spec, ns, {"namespaces": "a"})


# --- the spec's operations ------------------------------------------------------------------------


def operation(spec, endpoint: str) -> dict:
    method, path = endpoint.split(" ", 1)
    assert path in spec["paths"], f"{endpoint}: no such path in the spec"
    op = spec["paths"][path].get(method.lower())
    assert op is not None, f"{endpoint}: no such operation in the spec"
    return op


def check_answer(spec, endpoint: str, status: int, body: bytes) -> None:
    """The status is documented for the operation, and the body matches its schema."""
    responses = {str(k): v for k, v in operation(spec, endpoint)["responses"].items()}
    documented = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    assert documented is not None, f"{endpoint}: status {status} is not documented (has {sorted(responses)})"
    documented = _resolve(spec, documented)
    content = documented.get("content", {}).get("application/json")
    if endpoint.startswith("HEAD ") or content is None:
        return  # no body to check (HEAD answers carry none)
    doc = json.loads(body)
    errors = schema_errors(spec, content["schema"], doc)
    assert not errors, f"{endpoint} -> {status}: body does not match the spec: {errors[:5]}\n{body[:400]!r}"


# --- the cases --------------------------------------------------------------------------------------

TABLE_SCHEMA = {"type": "struct", "fields": [{"id": 1, "name": "id", "type": "long", "required": False}]}

P = "/v1/{prefix}"


def ep(method: str, path: str) -> str:
    return f"{method} {P}{path}"


def cases(state):
    """(endpoint, method, concrete path after /iceberg, body, expected status), in order."""
    base = f"/v1/{CATALOG_NAME}"
    ns = f"{base}/namespaces"
    tables = f"{ns}/conf/tables"
    uuid = lambda name: state["uuids"][name]  # noqa: E731 - filled in as tables are created
    return [
        # config
        ("GET /v1/config", "GET", "/v1/config", None, 200),
        ("GET /v1/config", "GET", f"/v1/config?warehouse={CATALOG_NAME}", None, 200),
        ("GET /v1/config", "GET", "/v1/config?warehouse=nope", None, 400),
        # create namespace
        (ep("POST", "/namespaces"), "POST", ns, {"namespace": ["conf"], "properties": {"a": "1"}}, 200),
        (ep("POST", "/namespaces"), "POST", ns, {"namespace": ["conf", "sub"]}, 200),
        (ep("POST", "/namespaces"), "POST", ns, {"namespace": ["conf"]}, 409),
        (ep("POST", "/namespaces"), "POST", ns, {}, 400),
        (ep("POST", "/namespaces"), "POST", ns, {"namespace": "conf"}, 400),
        (ep("POST", "/namespaces"), "POST", ns, {"namespace": [".."]}, 400),
        # list namespaces
        (ep("GET", "/namespaces"), "GET", ns, None, 200),
        (ep("GET", "/namespaces"), "GET", f"{ns}?parent=conf", None, 200),
        (ep("GET", "/namespaces"), "GET", f"{ns}?pageToken=&pageSize=1", None, 200),
        (ep("GET", "/namespaces"), "GET", f"{ns}?parent=nope", None, 404),
        (ep("GET", "/namespaces"), "GET", f"{ns}?pageToken=&pageSize=0", None, 400),
        # load / exists namespace
        (ep("GET", "/namespaces/{namespace}"), "GET", f"{ns}/conf", None, 200),
        (ep("GET", "/namespaces/{namespace}"), "GET", f"{ns}/conf{SEP}sub", None, 200),
        (ep("GET", "/namespaces/{namespace}"), "GET", f"{ns}/nope", None, 404),
        (ep("GET", "/namespaces/{namespace}"), "GET", f"{ns}/conf{SEP}", None, 400),
        (ep("HEAD", "/namespaces/{namespace}"), "HEAD", f"{ns}/conf", None, 204),
        (ep("HEAD", "/namespaces/{namespace}"), "HEAD", f"{ns}/nope", None, 404),
        # namespace properties
        (ep("POST", "/namespaces/{namespace}/properties"), "POST", f"{ns}/conf/properties",
         {"removals": ["a", "zz"], "updates": {"b": "2"}}, 200),
        (ep("POST", "/namespaces/{namespace}/properties"), "POST", f"{ns}/conf/properties",
         {"removals": ["b"], "updates": {"b": "3"}}, 422),
        (ep("POST", "/namespaces/{namespace}/properties"), "POST", f"{ns}/conf/properties", {"removals": "b"}, 400),
        (ep("POST", "/namespaces/{namespace}/properties"), "POST", f"{ns}/nope/properties", {"updates": {}}, 404),
        # create table (and a staged one)
        (ep("POST", "/namespaces/{namespace}/tables"), "POST", tables, {"name": "t1", "schema": TABLE_SCHEMA}, 200),
        (ep("POST", "/namespaces/{namespace}/tables"), "POST", tables,
         {"name": "t4", "schema": TABLE_SCHEMA, "properties": {"format-version": "1"}}, 200),
        (ep("POST", "/namespaces/{namespace}/tables"), "POST", tables,
         {"name": "staged", "schema": TABLE_SCHEMA, "stage-create": True}, 200),
        (ep("POST", "/namespaces/{namespace}/tables"), "POST", tables, {"name": "t1", "schema": TABLE_SCHEMA}, 409),
        (ep("POST", "/namespaces/{namespace}/tables"), "POST", tables, {"name": "t9"}, 400),
        (ep("POST", "/namespaces/{namespace}/tables"), "POST", tables,
         {"name": "t9", "schema": TABLE_SCHEMA, "location": "s3://bucket/t9"}, 400),
        (ep("POST", "/namespaces/{namespace}/tables"), "POST", f"{ns}/nope/tables",
         {"name": "t9", "schema": TABLE_SCHEMA}, 404),
        # list tables
        (ep("GET", "/namespaces/{namespace}/tables"), "GET", tables, None, 200),
        (ep("GET", "/namespaces/{namespace}/tables"), "GET", f"{tables}?pageToken=&pageSize=1", None, 200),
        (ep("GET", "/namespaces/{namespace}/tables"), "GET", f"{ns}/nope/tables", None, 404),
        (ep("GET", "/namespaces/{namespace}/tables"), "GET", f"{tables}?pageToken=%21%21", None, 400),
        # load / exists table
        (ep("GET", "/namespaces/{namespace}/tables/{table}"), "GET", f"{tables}/t1", None, 200),
        (ep("GET", "/namespaces/{namespace}/tables/{table}"), "GET", f"{tables}/t1?snapshots=refs", None, 200),
        (ep("GET", "/namespaces/{namespace}/tables/{table}"), "GET", f"{tables}/t1?snapshots=some", None, 400),
        (ep("GET", "/namespaces/{namespace}/tables/{table}"), "GET", f"{tables}/nope", None, 404),
        (ep("HEAD", "/namespaces/{namespace}/tables/{table}"), "HEAD", f"{tables}/t1", None, 204),
        (ep("HEAD", "/namespaces/{namespace}/tables/{table}"), "HEAD", f"{tables}/nope", None, 404),
        # commit
        (ep("POST", "/namespaces/{namespace}/tables/{table}"), "POST", f"{tables}/t1",
         lambda: {"requirements": [{"type": "assert-table-uuid", "uuid": uuid("t1")}],
                  "updates": [{"action": "set-properties", "updates": {"k": "v"}}]}, 200),
        (ep("POST", "/namespaces/{namespace}/tables/{table}"), "POST", f"{tables}/t1",
         {"requirements": [], "updates": [{"action": "no-such-update"}]}, 400),
        (ep("POST", "/namespaces/{namespace}/tables/{table}"), "POST", f"{tables}/t1",
         {"updates": []}, 400),
        (ep("POST", "/namespaces/{namespace}/tables/{table}"), "POST", f"{tables}/t1",
         {"requirements": [{"type": "assert-current-schema-id", "current-schema-id": 7}], "updates": []}, 409),
        (ep("POST", "/namespaces/{namespace}/tables/{table}"), "POST", f"{tables}/nope",
         {"requirements": [], "updates": []}, 404),
        # the staged table: created by its assert-create commit
        (ep("POST", "/namespaces/{namespace}/tables/{table}"), "POST", f"{tables}/staged",
         {"requirements": [{"type": "assert-create"}],
          "updates": [{"action": "add-schema", "schema": {**TABLE_SCHEMA, "schema-id": 0}},
                      {"action": "set-current-schema", "schema-id": -1}]}, 200),
        (ep("POST", "/namespaces/{namespace}/tables/{table}"), "POST", f"{tables}/staged",
         {"requirements": [{"type": "assert-create"}], "updates": []}, 409),
        # multi-table transaction
        (ep("POST", "/transactions/commit"), "POST", f"{base}/transactions/commit",
         lambda: {"table-changes": [
             {"identifier": {"namespace": ["conf"], "name": n},
              "requirements": [{"type": "assert-table-uuid", "uuid": uuid(n)}],
              "updates": [{"action": "set-properties", "updates": {"tx": "1"}}]} for n in ("t1", "t4")]}, 204),
        (ep("POST", "/transactions/commit"), "POST", f"{base}/transactions/commit",
         {"table-changes": [{"requirements": [], "updates": []}]}, 400),
        (ep("POST", "/transactions/commit"), "POST", f"{base}/transactions/commit",
         lambda: {"table-changes": [
             {"identifier": {"namespace": ["conf"], "name": "t1"},
              "requirements": [{"type": "assert-table-uuid", "uuid": uuid("t1")}],
              "updates": [{"action": "set-properties", "updates": {"tx": "2"}}]},
             {"identifier": {"namespace": ["conf"], "name": "t4"},
              "requirements": [{"type": "assert-table-uuid", "uuid": uuid("t1")}],
              "updates": []}]}, 409),
        (ep("POST", "/transactions/commit"), "POST", f"{base}/transactions/commit",
         {"table-changes": [{"identifier": {"namespace": ["conf"], "name": "nope"},
                             "requirements": [], "updates": []}]}, 404),
        # metrics
        (ep("POST", "/namespaces/{namespace}/tables/{table}/metrics"), "POST", f"{tables}/t1/metrics",
         {"report-type": "scan-report", "table-name": "conf.t1", "snapshot-id": -1, "filter": {"type": "true"},
          "schema-id": 0, "projected-field-ids": [1], "projected-field-names": ["id"], "metrics": {}}, 204),
        (ep("POST", "/namespaces/{namespace}/tables/{table}/metrics"), "POST", f"{tables}/t1/metrics", {}, 400),
        (ep("POST", "/namespaces/{namespace}/tables/{table}/metrics"), "POST", f"{tables}/nope/metrics",
         {"report-type": "commit-report"}, 404),
        # rename
        (ep("POST", "/tables/rename"), "POST", f"{base}/tables/rename",
         {"source": {"namespace": ["conf"], "name": "t1"}, "destination": {"namespace": ["conf", "sub"], "name": "t2"}},
         204),
        (ep("POST", "/tables/rename"), "POST", f"{base}/tables/rename",
         {"source": {"namespace": ["conf"], "name": "t1"}}, 400),
        (ep("POST", "/tables/rename"), "POST", f"{base}/tables/rename",
         {"source": {"namespace": ["conf"], "name": "t1"}, "destination": {"namespace": ["conf"], "name": "t5"}},
         404),
        (ep("POST", "/tables/rename"), "POST", f"{base}/tables/rename",
         {"source": {"namespace": ["conf"], "name": "t4"}, "destination": {"namespace": ["nope"], "name": "t5"}},
         404),
        (ep("POST", "/tables/rename"), "POST", f"{base}/tables/rename",
         {"source": {"namespace": ["conf", "sub"], "name": "t2"}, "destination": {"namespace": ["conf"], "name": "t4"}},
         409),
        # register (the renamed table's current metadata, under a new name)
        (ep("POST", "/namespaces/{namespace}/register"), "POST", f"{ns}/conf/register",
         lambda: {"name": "t3", "metadata-location": state["locations"]["t1"]}, 200),
        (ep("POST", "/namespaces/{namespace}/register"), "POST", f"{ns}/conf/register",
         lambda: {"name": "t3", "metadata-location": state["locations"]["t1"]}, 409),
        (ep("POST", "/namespaces/{namespace}/register"), "POST", f"{ns}/conf/register", {"name": "t6"}, 400),
        (ep("POST", "/namespaces/{namespace}/register"), "POST", f"{ns}/conf/register",
         {"name": "t6", "metadata-location": "file:///nowhere/v1.metadata.json"}, 400),
        (ep("POST", "/namespaces/{namespace}/register"), "POST", f"{ns}/nope/register",
         lambda: {"name": "t6", "metadata-location": state["locations"]["t1"]}, 404),
        # drop tables
        (ep("DELETE", "/namespaces/{namespace}/tables/{table}"), "DELETE", f"{tables}/t3", None, 204),
        (ep("DELETE", "/namespaces/{namespace}/tables/{table}"), "DELETE", f"{ns}/conf{SEP}sub/tables/t2?purgeRequested=true",
         None, 204),
        (ep("DELETE", "/namespaces/{namespace}/tables/{table}"), "DELETE", f"{tables}/t3", None, 404),
        (ep("DELETE", "/namespaces/{namespace}/tables/{table}"), "DELETE", f"{tables}/t4?purgeRequested=maybe",
         None, 400),
        # drop namespaces
        (ep("DELETE", "/namespaces/{namespace}"), "DELETE", f"{ns}/conf", None, 409),
        (ep("DELETE", "/namespaces/{namespace}/tables/{table}"), "DELETE", f"{tables}/t4", None, 204),
        (ep("DELETE", "/namespaces/{namespace}/tables/{table}"), "DELETE", f"{tables}/staged", None, 204),
        (ep("DELETE", "/namespaces/{namespace}"), "DELETE", f"{ns}/conf{SEP}sub", None, 204),
        (ep("DELETE", "/namespaces/{namespace}"), "DELETE", f"{ns}/conf", None, 204),
        (ep("DELETE", "/namespaces/{namespace}"), "DELETE", f"{ns}/conf", None, 404),
        (ep("DELETE", "/namespaces/{namespace}"), "DELETE", f"{ns}/conf{SEP}", None, 400),
    ]


def call(server, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    return http_request(method, f"{server.url}/iceberg{path}", data, headers)


def test_every_endpoint_with_valid_and_invalid_inputs(spec, floe_server):
    cfg = call(floe_server, "GET", "/v1/config").json()
    endpoints = set(cfg["endpoints"])
    for e in endpoints:
        operation(spec, e)  # every listed route is a spec operation
    state = {"uuids": {}, "locations": {}}
    outcomes = collections.defaultdict(set)
    for endpoint, method, path, body, want in cases(state):
        assert endpoint in endpoints or endpoint == "GET /v1/config", f"case for an unlisted route {endpoint}"
        if callable(body):
            body = body()
        resp = call(floe_server, method, path, body)
        assert resp.status == want, f"{method} {path} {body!r:.200}: want {want}, got {resp.status} {resp.body[:300]!r}"
        check_answer(spec, endpoint, resp.status, resp.body)
        if resp.status >= 400 and method != "HEAD":
            err = resp.json()["error"]
            assert err["code"] == resp.status, err
        if resp.status == 200 and "metadata" in (doc := resp.json()):
            name = path.split("?")[0].rsplit("/", 1)[-1]
            if method == "POST" and path.endswith("/tables"):
                name = body["name"]
            state["uuids"][name] = doc["metadata"]["table-uuid"]
            if doc.get("metadata-location"):
                state["locations"][name] = doc["metadata-location"]
        outcomes[endpoint].add("valid" if resp.status < 400 else "invalid")
    for e in sorted(endpoints | {"GET /v1/config"}):
        assert outcomes[e] == {"valid", "invalid"}, f"{e}: exercised only with {outcomes[e] or 'nothing'}"
    print(f"{sum(1 for _ in cases(state))} calls over {len(outcomes)} routes, every answer as the spec documents")


AUTH_TOKENS = """
[[auth.tokens]]
token = "reader"
scopes = ["read"]
"""


def test_every_endpoint_answers_401_and_403_in_the_spec_shape(spec, floe_server_factory):
    server = floe_server_factory(extra=AUTH_TOKENS)
    endpoints = call(server, "GET", "/v1/config", token="reader").json()["endpoints"]
    concrete = {
        "{prefix}": CATALOG_NAME, "{namespace}": "analytics", "{table}": "events",
    }
    for e in endpoints:
        method, path = e.split(" ", 1)
        for k, v in concrete.items():
            path = path.replace(k, v)
        body = None if method in ("GET", "HEAD", "DELETE") else {}
        resp = call(server, method, path, body)
        assert resp.status == 401, f"{e} without a token: {resp.status}"
        check_answer(spec, e, 401, resp.body)
        resp = call(server, method, path, body, token="not-a-token")
        assert resp.status == 401, f"{e} with an unknown token: {resp.status}"
        write = method in ("POST", "DELETE") and not e.endswith("/metrics")
        resp = call(server, method, path, body, token="reader")
        if write:
            assert resp.status == 403, f"{e} with a read token: {resp.status}"
            check_answer(spec, e, 403, resp.body)
        else:
            assert resp.status not in (401, 403), f"{e} with a read token: {resp.status}"
            check_answer(spec, e, resp.status, resp.body)
    # The config route needs a token too.
    resp = call(server, "GET", "/v1/config")
    assert resp.status == 401
    check_answer(spec, "GET /v1/config", 401, resp.body)
    assert urllib.parse.quote("\x1f") == SEP
