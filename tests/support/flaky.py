"""An HTTP server for job inputs that answers 503 a set number of times before it
serves the file: the real shape of a transient input failure (retried by the worker)."""

from __future__ import annotations

import http.server
import threading


class FlakyServer:
    def __init__(self, payload: bytes, failures: int = 0) -> None:
        self.payload = payload
        self.failures_left = failures  # -1: fail forever
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if owner.failures_left != 0:
                    owner.failures_left -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(owner.payload)))
                self.end_headers()
                self.wfile.write(owner.payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/clip.mp4"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
