"""A loopback HTTP proxy that injects faults between a client and the moto server.

Each ``Rule`` matches requests by method and a path pattern and injects its fault into the
next ``times`` of them (``times=None``: all):

- ``"503"``: an S3 ``SlowDown`` answer, the request not forwarded;
- ``"500"``: an S3 ``InternalError`` answer, not forwarded;
- ``"reset"``: forwarded; the status, headers and half the body are sent, then a TCP reset
  (an answer without a body, as to a PUT, is reset before anything is sent);
- ``"truncate"``: forwarded; headers with the true ``Content-Length``, half the body, a clean
  close (only answers with a body);
- ``"latency"``: forwarded after ``delay_s``;
- ``"stall"``: read, never answered (the connection stays open until the proxy stops).

Only loopback addresses are used: the proxy listens on 127.0.0.1 and forwards to the moto
server's loopback port.
"""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

FAULTS = ("503", "500", "reset", "truncate", "latency", "stall")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "host"}
_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass
class Rule:
    fault: str
    method: str | None = None
    path: str = ""
    times: int | None = 1
    delay_s: float = 0.5
    injected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, method: str, path: str) -> bool:
        if self.method not in (None, method) or not re.search(self.path, path):
            return False
        with self._lock:
            if self.times is not None and self.injected >= self.times:
                return False
            self.injected += 1
            return True


class FaultProxy:
    """The proxy's server thread and its rules (replace ``rules`` between steps of a test)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.rules: list[Rule] = []
        self.requests = 0
        self._stop = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def injected(self) -> int:
        return sum(r.injected for r in self.rules)

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        body = _read_body(h)
        self.requests += 1
        rule = next((r for r in self.rules if r.take(h.command, h.path)), None)
        fault = rule.fault if rule else None
        if fault == "stall":
            self._stop.wait(600)
            h.close_connection = True
            return
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            xml = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>{message}</Message></Error>"
            ).encode()
            _answer(h, status, [("Content-Type", "application/xml")], xml)
            return
        if fault == "latency":
            time.sleep(rule.delay_s)
        status, headers, payload = self._forward(h, body)
        if fault == "reset" and len(payload) < 2:  # no body to cut: reset before answering
            _reset(h)
            return
        if fault in ("reset", "truncate") and len(payload) > 1 and h.command != "HEAD":
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload[: len(payload) // 2])
            h.wfile.flush()
            if fault == "reset":
                _reset(h)
            h.close_connection = True
            return
        _answer(h, status, headers, payload, head=h.command == "HEAD")

    def _forward(self, h, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
            headers["Host"] = h.headers.get("Host", f"{self.upstream[0]}:{self.upstream[1]}")
            conn.request(h.command, h.path, body=body or None, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            kept = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in _HOP and k.lower() != "content-length"
            ]
            if h.command == "HEAD":
                length = response.getheader("Content-Length")
                if length is not None:
                    kept.append(("Content-Length", length))
            return response.status, kept, payload
        finally:
            conn.close()


def _reset(h: http.server.BaseHTTPRequestHandler) -> None:
    """Close the connection with a TCP reset (linger 0) instead of a clean close."""
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.close_connection = True


def _read_body(h: http.server.BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


def _answer(h, status: int, headers, payload: bytes, *, head: bool = False) -> None:
    h.send_response(status)
    has_length = False
    for k, v in headers:
        has_length |= k.lower() == "content-length"
        h.send_header(k, v)
    if not has_length:
        h.send_header("Content-Length", str(len(payload)))
    h.end_headers()
    if not head:
        h.wfile.write(payload)
