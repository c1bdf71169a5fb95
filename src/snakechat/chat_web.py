"""Serve a checkpoint as a web chat: one page and a streaming JSON API, on 127.0.0.1 by default.

    python -m snakechat.chat_web --checkpoint results/sft/tiny --port 8000
    python -m snakechat.chat_web --model d20 --stage sft --host 0.0.0.0 --max-concurrent 4

Endpoints:
- `GET /`: the chat page (chat_web.html);
- `POST /chat/completions`: body {"messages": [{"role": "user"|"assistant", "content": str}, ...],
  optional "temperature", "top_k", "max_tokens", "seed"}; the reply streams as server-sent
  events `data: {"token": "..."}`, ending with `data: {"done": true, "finish_reason": ...}`;
- `GET /health`: {"status": "ok"}.
Requests over the limits (message length, turns, max_tokens, concurrent requests) get a JSON
error {"error": "..."} with status 400, 413 or 503 before any generation starts.

Standard library HTTP server (one thread per connection); the model is shared read-only.
"""

import argparse
import json
import random
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from snakechat.chat_cli import add_checkpoint_args, load_engine
from snakechat.conversation import render_for_completion

ROLES = ("user", "assistant")


@dataclass
class Limits:
    max_message_chars: int = 2000
    max_turns: int = 20
    max_tokens: int = 512
    max_concurrent: int = 2

    @property
    def max_body_bytes(self):
        return 4 * self.max_message_chars * 2 * self.max_turns + 4096  # UTF-8 and JSON overhead


class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _number(body, key, kind, low, high, default):
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise RequestError(400, f"{key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise RequestError(400, f"{key!r} must be between {low} and {high}, got {value}")
    return value


def check_request(body, limits, defaults):
    """(messages, sampling settings) from a request body, or RequestError saying what is wrong."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RequestError(400, f"message {i}: needs 'role' (user or assistant) and string 'content'")
        if m["role"] != ROLES[i % 2]:
            raise RequestError(400, f"message {i}: roles must alternate user, assistant, user, ... (got {m['role']!r})")
        if len(m["content"]) > limits.max_message_chars:
            raise RequestError(400, f"message {i} has {len(m['content'])} characters; the limit is {limits.max_message_chars}")
    if messages[-1]["role"] != "user":
        raise RequestError(400, "the last message must be from the user")
    turns = (len(messages) + 1) // 2
    if turns > limits.max_turns:
        raise RequestError(400, f"the conversation has {turns} user turns; the limit is {limits.max_turns} (start a new chat)")
    settings = {
        "temperature": _number(body, "temperature", float, 0.0, 2.0, defaults["temperature"]),
        "top_k": _number(body, "top_k", int, 0, 1_000_000, defaults["top_k"]) or None,
        "max_tokens": _number(body, "max_tokens", int, 1, limits.max_tokens, limits.max_tokens),
        "seed": _number(body, "seed", int, 0, 2**63 - 1, defaults["rng"].randrange(2**31)),
    }
    return [{"role": m["role"], "content": m["content"]} for m in messages], settings


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, engine, tokenizer, limits, defaults):
        super().__init__(address, ChatHandler)
        self.engine, self.tokenizer, self.limits, self.defaults = engine, tokenizer, limits, defaults
        self.slots = threading.BoundedSemaphore(limits.max_concurrent)
        self.page = resources.files("snakechat").joinpath("chat_web.html").read_bytes()


class ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "snakechat"

    def _send(self, status, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status, message, headers=()):
        self._send(status, {"error": message}, headers=headers)

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no page {self.path}; try / or POST /chat/completions")

    def do_POST(self):
        if self.path != "/chat/completions":
            self._error(404, f"no endpoint {self.path}; POST /chat/completions")
            return
        try:
            messages, settings, ids = self._read_request()
        except RequestError as e:
            self.close_connection = True
            self._error(e.status, str(e))
            return
        if not self.server.slots.acquire(blocking=False):
            self._error(503, f"busy: {self.server.limits.max_concurrent} replies are being generated; try again shortly", headers=[("Retry-After", "1")])
            return
        try:
            self._stream(ids, settings)
        finally:
            self.server.slots.release()

    def _read_request(self):
        limits = self.server.limits
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(411, "a Content-Length header is required") from None
        if length > limits.max_body_bytes:
            self._discard(length)
            raise RequestError(413, f"request body of {length} bytes is larger than the limit of {limits.max_body_bytes}")
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(400, f"the request body is not valid JSON: {e}") from None
        messages, settings = check_request(body, limits, self.server.defaults)
        ids = render_for_completion(self.server.tokenizer, {"messages": messages})
        room = self.server.engine.max_len - len(ids)
        if room < 1:
            raise RequestError(400, f"the conversation is {len(ids)} tokens long; the model handles {self.server.engine.max_len} (start a new chat)")
        settings["max_tokens"] = min(settings["max_tokens"], room)
        return messages, settings, ids

    def _discard(self, length, cap=16 << 20):
        """Read and drop an unwanted body (up to `cap`), so closing the socket does not reset it
        before the client has read the error."""
        left = min(length, cap)
        while left > 0 and (block := self.rfile.read(min(left, 1 << 16))):
            left -= len(block)

    def _chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, obj):
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _stream(self, ids, settings):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pieces = self.server.engine.stream_text(ids, **settings)
        try:
            count = 0
            for piece in pieces:
                self._event({"token": piece})
                count += 1
            self._event({"done": True, "pieces": count})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; stop generating
        finally:
            pieces.close()


def make_server(engine, tokenizer, host="127.0.0.1", port=8000, limits=None, temperature=0.6, top_k=50, seed=0):
    """The server (not yet serving); requests without a seed get one drawn from `seed`."""
    defaults = {"temperature": temperature, "top_k": top_k, "rng": random.Random(seed)}
    return ChatServer((host, port), engine, tokenizer, limits or Limits(), defaults)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the chat to the network)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port")
    p.add_argument("--max-message-chars", type=int, default=Limits.max_message_chars)
    p.add_argument("--max-turns", type=int, default=Limits.max_turns)
    p.add_argument("--max-tokens", type=int, default=Limits.max_tokens, help="most tokens per reply")
    p.add_argument("--max-concurrent", type=int, default=Limits.max_concurrent, help="replies generated at once; more get 503")
    args = p.parse_args(argv)
    engine, tok = load_engine(p, args)
    limits = Limits(args.max_message_chars, args.max_turns, args.max_tokens, args.max_concurrent)
    server = make_server(engine, tok, args.host, args.port, limits, args.temperature, args.top_k, args.seed)
    print(f"snakechat web chat on http://{server.server_address[0]}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
