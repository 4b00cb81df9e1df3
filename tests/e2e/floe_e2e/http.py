"""floe's HTTP contract from the client side: requests, answers and their checks.

Only the stdlib (urllib, http.client, raw sockets for `post_large`), with proxies disabled, and
only to 127.0.0.1. The routes and answers are those of README.md ("HTTP"); the ingest limits are
in docs/config.md ("Limits and what they answer"), idempotency keys in docs/design.md
("Idempotency keys").
"""

from __future__ import annotations

import dataclasses
import gzip as gzip_module
import http.client
import json
import re
import select
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .config import LOOPBACK, STREAM

#: Timeout of one HTTP request (seconds).
HTTP_TIMEOUT = 30.0

# No proxies: requests go to 127.0.0.1 even when http_proxy is set in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"response body (status {self.status}) is not JSON: {self.body[:500]!r}") from None

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


def http_request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout: float = HTTP_TIMEOUT) -> Response:
    """One HTTP request with urllib; 4xx/5xx are returned, not raised."""
    assert urllib.parse.urlsplit(url).hostname in (LOOPBACK, "localhost"), url
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers.items()), r.read())
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, dict(e.headers.items()), e.read())


def http_get(url: str, timeout: float = HTTP_TIMEOUT) -> Response:
    return http_request("GET", url, timeout=timeout)


def encode_rows(rows: list[Any], fmt: str = "json") -> bytes:
    """`json`: one JSON array; `ndjson`: one JSON value per line."""
    if fmt == "json":
        return json.dumps(rows).encode()
    if fmt == "ndjson":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    raise ValueError(fmt)


def events_url(url: str, stream: str = STREAM) -> str:
    return f"{url}/v1/streams/{stream}/events"


def post_events(url: str, rows: list[Any] | None = None, *, stream: str = STREAM, fmt: str = "json",
                gzip: bool = False, body: bytes | None = None, headers: dict[str, str] | None = None,
                content_type: str | None = None, timeout: float = HTTP_TIMEOUT) -> Response:
    """POST {url}/v1/streams/{stream}/events.

    Either `rows` (encoded per `fmt`: "json" array or "ndjson") or a raw `body`. `gzip=True`
    compresses the body and sets Content-Encoding: gzip.
    """
    if body is None:
        assert rows is not None
        body = encode_rows(rows, fmt)
    if gzip:
        body = gzip_module.compress(body)
    h = {"Content-Type": content_type or ("application/x-ndjson" if fmt == "ndjson" else "application/json")}
    if gzip:
        h["Content-Encoding"] = "gzip"
    h.update(headers or {})
    return http_request("POST", events_url(url, stream), body=body, headers=h, timeout=timeout)


def post_large(url: str, path: str, body: bytes, headers: dict[str, str] | None = None,
               timeout: float = HTTP_TIMEOUT) -> Response:
    """POSTs a big body so that a server that refuses it early (413) is still heard.

    A server may answer before reading the whole body and close the connection; a plain client
    then dies with EPIPE/ECONNRESET while still sending. This one sends `Expect: 100-continue`,
    and while sending watches the socket, stopping as soon as an answer arrives.
    """
    u = urllib.parse.urlsplit(url)
    assert u.hostname in (LOOPBACK, "localhost"), url
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        hdrs = {
            "Host": f"{u.hostname}:{u.port}",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Expect": "100-continue",
            "Connection": "close",
            **(headers or {}),
        }
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        sock.sendall(head.encode("latin-1"))

        send_body = True
        readable, _, _ = select.select([sock], [], [], 2.0)
        if readable:
            peeked = _peek_until(sock, b"\r\n\r\n", deadline)
            first_line = peeked.split(b"\r\n", 1)[0]
            if re.match(rb"HTTP/1\.[01] 100\b", first_line):
                sock.recv(peeked.index(b"\r\n\r\n") + 4)  # consume the interim answer
            else:
                send_body = False  # a final answer already: do not send the body

        if send_body:
            view = memoryview(body)
            sent = 0
            while sent < len(body):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"sending {len(body)} bytes did not finish within {timeout}s")
                readable, writable, _ = select.select([sock], [sock], [], remaining)
                if readable:
                    break  # the server answered early
                if writable:
                    try:
                        sent += sock.send(view[sent:sent + 65536])
                    except (BrokenPipeError, ConnectionResetError):
                        break

        resp = http.client.HTTPResponse(sock, method="POST")
        try:
            resp.begin()
            data = resp.read()
        except (ConnectionResetError, http.client.RemoteDisconnected) as e:
            raise AssertionError(f"the server reset the connection without an HTTP answer: {e!r}") from None
        return Response(resp.status, dict(resp.getheaders()), data)
    finally:
        sock.close()


def _peek_until(sock: socket.socket, marker: bytes, deadline: float) -> bytes:
    while True:
        data = sock.recv(65536, socket.MSG_PEEK)
        if marker in data or not data:
            return data
        if time.monotonic() > deadline:
            return data
        time.sleep(0.01)


def assert_error_body(resp: Response, status: int) -> dict:
    """Asserts `status` and the error shape {"error": {"code": str, "message": str}, ...}."""
    assert resp.status == status, f"expected HTTP {status}, got {resp.status}: {resp.body[:1000]!r}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"no error object: {body}"
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], f"error.code missing/empty: {body}"
    assert isinstance(err.get("message"), str) and err["message"], f"error.message missing/empty: {body}"
    return body


def assert_row_error(body: dict, row: int, field: str) -> dict:
    """Asserts the 400 body's `rows` list names (row, field) and gives a message; returns it."""
    rows = body.get("rows")
    assert isinstance(rows, list) and rows, f"no `rows` list in error body: {body}"
    for r in rows:
        assert isinstance(r, dict) and {"row", "field", "message"} <= set(r), f"bad row error entry {r!r} in {body}"
    hits = [r for r in rows if r["row"] == row and r["field"] == field]
    assert hits, f"expected a row error for row {row}, field {field!r}; got {rows}"
    assert isinstance(hits[0]["message"], str) and hits[0]["message"]
    return hits[0]


def assert_accepted(resp: Response, n: int) -> dict:
    assert resp.status == 200, f"expected 200, got {resp.status}: {resp.body[:1000]!r}"
    body = resp.json()
    assert body.get("accepted") == n, f"expected accepted={n}: {body}"
    return body


# --- idempotency keys, failures of the connection ---------------------------------------------

#: Request header naming a retry-safe request (README.md "HTTP"; docs/design.md "Idempotency keys").
IDEMPOTENCY_KEY = "Idempotency-Key"
#: Response header on an answer replayed for a key seen before.
REPLAYED = "Idempotent-Replayed"

#: What a client sees when the server is down, restarting, or dies in the middle of a request
#: (urllib's URLError, ConnectionRefused/Reset, RemoteDisconnected, timeouts, IncompleteRead).
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


def key_headers(key: str, **more: str) -> dict[str, str]:
    """`{"Idempotency-Key": key}` plus `more`."""
    return {IDEMPOTENCY_KEY: key, **more}


def is_replayed(resp: Response) -> bool:
    """Whether the answer carries `Idempotent-Replayed: true`."""
    value = resp.header(REPLAYED)
    return value is not None and value.strip().lower() == "true"


def try_post_events(url: str, rows: list[Any] | None = None, **kwargs: Any) -> Response | BaseException:
    """`post_events`, but a connection failure is returned (not raised): the caller decides
    whether the request counts as unacknowledged."""
    try:
        return post_events(url, rows, **kwargs)
    except CONNECTION_ERRORS as e:
        return e
