"""A real HTTP server on 127.0.0.1 serving a directory, with the failures downloads must survive.

Modes (set `server.mode` at any time):
  normal   - serves files, honours `Range: bytes=N-` / `bytes=N-M` with 206 replies
  drop     - the first request for each file promises the whole body but sends half of it and
             closes the connection; later requests are served normally
  corrupt  - serves every file with its second half scrambled (same length, wrong bytes)
  norange  - ignores Range headers and always sends the whole file with 200
  busy     - the first request for each file gets 503 with `Retry-After: <server.retry_after>` (default
             0); later ones are served
  nolength - serves every file whole with no Content-Length header, the end marked by closing
  trickle  - sends the body one byte every `server.trickle_s` seconds (default 0.05), each byte
             well inside any read timeout
  slowhead - sends the status line and headers one byte every `server.trickle_s` seconds

Use the `http_server` fixture: `from http_server import http_server` in a test module, then
write files under `http_server.root` and fetch `http_server.url("name")`.
"""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server.owner
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (server.root / rel).resolve()
        range_header = self.headers.get("Range")
        server.requests.append((rel, range_header))
        if not path.is_file() or server.root.resolve() not in path.parents:
            self.send_error(404)
            return
        if server.mode == "busy" and rel not in server.dropped:
            server.dropped.add(rel)
            self.send_response(503)
            self.send_header("Retry-After", server.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        if server.mode == "slowhead":
            self._trickle(f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
            return
        if server.mode == "corrupt":
            half = len(data) // 2
            data = data[:half] + bytes(b ^ 0x5A for b in data[half:])
        start, end, status = 0, len(data), 200
        if range_header and server.mode != "norange":
            first, _, last = range_header.removeprefix("bytes=").partition("-")
            start = int(first)
            end = int(last) + 1 if last else len(data)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if server.mode == "nolength":
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if server.mode == "drop" and rel not in server.dropped:
            server.dropped.add(rel)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if server.mode == "trickle":
            self._trickle(body)
            return
        self.wfile.write(body)

    def _trickle(self, data):
        """`data` a byte at a time, until it is all sent or the client hangs up."""
        self.close_connection = True
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(self.server.owner.trickle_s)
        except OSError:
            pass


class FileServer:
    def __init__(self, root, mode="normal"):
        self.root = Path(root)
        self.mode = mode
        self.retry_after = "0"  # what `busy` answers
        self.trickle_s = 0.05  # seconds between the bytes of `trickle` and `slowhead`
        self.requests = []  # (path, Range header or None), in order
        self.dropped = set()  # files that already had their one failure (drop / busy)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self):
        return self._httpd.server_address[1]

    def url(self, rel=""):
        return f"http://127.0.0.1:{self.port}/{rel}"

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = FileServer(root).start()
    yield server
    server.stop()
