"""A counting proxy in front of one moto server: AWS requests per role, service and operation.

    proxy = CountingProxy("http://127.0.0.1:5000")
    client = boto3.client("sqs", endpoint_url=proxy.endpoint("worker"))
    before = proxy.snapshot(); ...; spent = proxy.snapshot() - before
    spent.total(role="worker", service="sqs").requests

Each role (caller, worker, ...) gets a listener of its own on 127.0.0.1, so whatever a client
pointed at that address sends is tallied under its role, with no change to the client beyond
its endpoint URL. The operation comes from ``X-Amz-Target`` (JSON protocols: DynamoDB, SQS
JSON) or the ``Action`` form field (SQS query protocol); the service from the request's SigV4
credential scope. Besides counts, the proxy keeps bytes and billable units (``aws_billing``).
HTTP/1.1 keep-alive on both sides, one upstream connection per client connection, so the
proxy adds one loopback hop and no connection set-ups.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, fields
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aws_billing import units_of

Key = tuple[str, str, str]
"""(role, service, operation), e.g. ("worker", "sqs", "ReceiveMessage")."""

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                         "te", "trailer", "upgrade", "content-length", "expect"})
_SCOPE = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")
_TARGET_SERVICES = {"DynamoDB": "dynamodb", "AmazonSQS": "sqs"}


@dataclass
class Tally:
    """What the requests under one key added up to."""

    requests: int = 0
    errors: int = 0
    """Requests answered with an HTTP error status (throttling, a failed condition, ...)."""
    request_bytes: int = 0
    response_bytes: int = 0
    sqs_requests: int = 0
    """SQS billing units: one per 64 KB chunk of payload."""
    read_units: float = 0.0
    write_units: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


class Counts:
    """An immutable snapshot of the proxy's tallies; subtract two to get a window's."""

    def __init__(self, tallies: dict[Key, Tally]) -> None:
        self._tallies = dict(tallies)

    def __sub__(self, earlier: Counts) -> Counts:
        diff = {key: tally - earlier._tallies.get(key, Tally())
                for key, tally in self._tallies.items()}
        return Counts({key: tally for key, tally in diff.items() if tally.requests})

    def __iter__(self) -> Iterator[tuple[Key, Tally]]:
        return iter(sorted(self._tallies.items()))

    def total(self, *, role: str | None = None, service: str | None = None,
              operation: str | None = None) -> Tally:
        """The sum over the keys that match every filter given."""
        total = Tally()
        for (r, s, o), tally in self._tallies.items():
            if role in (None, r) and service in (None, s) and operation in (None, o):
                total += tally
        return total


class Expected:
    """A request some role is expected to send; ``wait`` says when it arrived."""

    def __init__(self, role: str, operation: str) -> None:
        self.role, self.operation = role, operation
        self._at_s = 0.0
        self._seen = threading.Event()

    def arrived(self, at_s: float) -> None:
        self._at_s = at_s
        self._seen.set()

    def wait(self, timeout_s: float) -> float:
        """``time.monotonic()`` at its arrival; TimeoutError if none within ``timeout_s``."""
        if not self._seen.wait(timeout_s):
            raise TimeoutError(f"{self.role} sent no {self.operation} within {timeout_s:.0f} s")
        return self._at_s


class CountingProxy:
    """Listeners on 127.0.0.1, one per role, forwarding to ``upstream_url`` and counting."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._servers: dict[str, _RoleServer] = {}
        self._tallies: dict[Key, Tally] = {}
        self._expected: list[Expected] = []
        self._lock = threading.Lock()

    def endpoint(self, role: str) -> str:
        """The endpoint URL for clients of ``role`` (a listener is started the first time)."""
        if role not in self._servers:
            server = _RoleServer(self, role)
            threading.Thread(target=server.serve_forever, name=f"proxy-{role}",
                             daemon=True).start()
            self._servers[role] = server
        host, port = self._servers[role].server_address[:2]
        return f"http://{host!s}:{port}"

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts({key: Tally() + tally for key, tally in self._tallies.items()})

    def expect(self, role: str, operation: str) -> Expected:
        """Watch for the next ``operation`` that ``role`` sends from now on."""
        expected = Expected(role, operation)
        with self._lock:
            self._expected.append(expected)
        return expected

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def _arrived(self, key: Key, at_s: float) -> None:
        role, _, operation = key
        with self._lock:
            met = [e for e in self._expected if (e.role, e.operation) == (role, operation)]
            for expected in met:
                expected.arrived(at_s)
                self._expected.remove(expected)

    def _record(self, key: Key, status: int, request: bytes, response: bytes) -> None:
        units = units_of(key[1], key[2], request, response)
        tally = Tally(1, int(status >= 400), len(request), len(response), units.sqs_requests,
                      units.read_units, units.write_units)
        with self._lock:
            self._tallies[key] = self._tallies.get(key, Tally()) + tally

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RoleServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: CountingProxy, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy, self.role = proxy, role


class _Handler(BaseHTTPRequestHandler):
    """Forwards each request on this client connection over one upstream connection."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body in two writes wait on delayed ACKs
    server: _RoleServer

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        self._close_upstream()
        super().finish()

    def do_POST(self) -> None:
        arrived_s = time.monotonic()
        body = self._read_body()
        if body is None:
            self.close_connection = True
            return
        key = (self.server.role, *classify(self.command, self.path, self.headers, body))
        self.server.proxy._arrived(key, arrived_s)
        try:
            status, headers, reply = self._forward(body)
        except (http.client.HTTPException, OSError) as exc:  # moto is gone (shutting down)
            status, headers = 502, [("Content-Type", "text/plain")]
            reply = f"proxy: no answer from moto: {exc}".encode()
        self.server.proxy._record(key, status, body, reply)
        try:
            self.send_response_only(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped waiting
            self.close_connection = True

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST

    def log_message(self, format: str, *args: object) -> None:
        """No access log."""

    def _read_body(self) -> bytes | None:
        """The request's body, or None (connection closed) if there is no whole body to
        forward: the client went away mid-request, or sent chunks (no AWS SDK here does)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(501, "the counting proxy takes bodies with a Content-Length only")
            return None
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        return body if len(body) == length else None

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() not in _HOP_BY_HOP}
        reused = self._upstream is not None
        try:
            return self._exchange(body, headers)
        except (http.client.HTTPException, OSError):
            self._close_upstream()
            if not reused:
                raise
        return self._exchange(body, headers)  # moto closed the kept-alive connection: again

    def _exchange(self, body: bytes,
                  headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=60)
        self._upstream.request(self.command, self.path, body, headers)
        response = self._upstream.getresponse()
        reply = response.read()
        kept = [(n, v) for n, v in response.getheaders() if n.lower() not in _HOP_BY_HOP]
        return response.status, kept, reply

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None


def classify(method: str, path: str, headers: Message[str, str],
             body: bytes) -> tuple[str, str]:
    """(service, operation) of one AWS request; a REST request (S3) is named by its method."""
    target = headers.get("X-Amz-Target", "")
    scope = _SCOPE.search(headers.get("Authorization", ""))
    service = scope.group(1) if scope else _TARGET_SERVICES.get(
        target.split("_")[0].split(".")[0], "unknown")
    if target:
        return service, target.rsplit(".", 1)[-1]
    query = urllib.parse.urlsplit(path).query
    form = urllib.parse.parse_qs(query)
    if "form-urlencoded" in headers.get("Content-Type", ""):
        form.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
    return service, form.get("Action", [method])[0]
