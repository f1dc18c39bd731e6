"""A loopback HTTP server answering every GET with JSON: a stand-in REST API for clients' tests."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable, Iterator


@contextmanager
def json_server(answer: Callable[[], object]) -> Iterator[tuple[str, HTTPServer]]:
    """(base URL, server) of a server whose every GET gets `answer()` as JSON; shut down on exit
    (a test may shut it down earlier, to see what its client makes of a server gone)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(answer()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
