"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the moto server.

moto serves every AWS service on one endpoint, so the proxy tells DynamoDB's requests apart by
their ``X-Amz-Target`` header (``DynamoDB_20120810.GetItem``): while ``down`` is set it answers
them with a 503, as DynamoDB does when it cannot serve; everything else (SQS, S3) is forwarded.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
OUTAGE_BODY = (b'{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailable",'
               b'"message":"injected outage"}')


class FaultProxy:
    """``with FaultProxy(moto_url) as proxy:`` point the app at ``proxy.endpoint_url``."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.down = threading.Event()
        """While set, DynamoDB requests get a 503."""
        self.refused = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fault-proxy")

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count_refusal(self) -> None:
        with self._lock:
            self.refused += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target") or ""
                if proxy.down.is_set() and target.startswith("DynamoDB_"):
                    proxy._count_refusal()
                    self._answer(503, [("Content-Type", "application/x-amz-json-1.0")],
                                 OUTAGE_BODY)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self._answer(response.status, response.getheaders(), data)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        return Handler
