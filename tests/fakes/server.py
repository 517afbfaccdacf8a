"""Serve a fake's `handle(httpx.Request) -> httpx.Response` on 127.0.0.1:0 or through MockTransport."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Handler = Callable[[httpx.Request], httpx.Response]


def mock_transport(handle: Handler) -> httpx.MockTransport:
    """A MockTransport that runs the (possibly blocking) handler off the event loop."""

    async def ahandle(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await asyncio.to_thread(handle, request)

    return httpx.MockTransport(ahandle)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (killed bot, closed connection) is not an error of the fake."""
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    """The same handler on a real socket, for tests that run the bot as a subprocess."""

    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        outer = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}"
                request = httpx.Request(self.command, url, headers=dict(self.headers.items()), content=body)
                response = outer._handle(request)
                payload = response.content
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() in ("content-length", "transfer-encoding", "connection"):
                        continue
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:  # keep test output clean
                return

        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Root URL, e.g. http://127.0.0.1:40123."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
