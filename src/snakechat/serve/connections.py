"""The HTTP connection layer under snakechat.chat_web: uvicorn's h11 protocol with the limits a
public-facing server needs, decided per connection before the application sees a request.

- A request's line and headers must arrive within `header_timeout` seconds of the connection's
  start, or of its previous response's end (uvicorn alone stops its keep-alive timer at a
  request's first byte, so a header byte a second held a connection forever).
- `max_connections` bounds the connections with a request in progress; connections that are idle
  (nothing sent yet, part of a request line or headers only, or waiting between keep-alive
  requests) do not count against it: when more than `max_connections` connections are open, a new
  one closes the connection idle longest. A request beyond the limit gets 503 in the API's error
  shape with Retry-After. (uvicorn's own limit counted idle connections, so a few dozen sockets
  that never sent a byte refused everyone with a plain-text 503.)
- A request framed both by Content-Length and by Transfer-Encoding is refused (400) and its
  connection closed: the two framings disagree on where the next request starts.
- A client that goes away mid-request is logged as one line, not as the traceback of the
  application's exception.
"""

import json
import logging

from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

LOG = logging.getLogger("uvicorn.error")


def log_departure(scope, what=""):
    """One log line for a client that went away mid-request."""
    client = "%s:%d" % tuple(scope["client"]) if scope.get("client") else "a client"
    LOG.warning("%s went away during %s %s%s", client, scope["method"], scope["path"], what)


async def send_error(send, status, message, code, headers=()):
    """Answer with an OpenAI-shaped error and close the connection."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with the limits in the module docstring (set the class attributes
    in a subclass per server: see protocol_class)."""

    header_timeout = 10.0
    max_connections = 64

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.guarded_app, self.app = self.app, self.guard
        self.idle_since = None

    def busy(self):
        """Whether a request is in progress on this connection (its headers in, its response not out)."""
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport):
        super().connection_made(transport)
        self.idle_since = self.loop.time()
        self.arm_header_deadline()
        excess = len(self.connections) - self.max_connections
        if excess > 0:
            idle = sorted((c for c in self.connections if c is not self and not c.busy()), key=lambda c: c.idle_since)
            for connection in idle[:excess]:
                connection.transport.close()

    def on_response_complete(self):
        super().on_response_complete()
        self.idle_since = self.loop.time()
        self.arm_header_deadline()

    def arm_header_deadline(self):
        self.loop.call_later(self.header_timeout, self.close_unless_a_request_began, self.cycle)

    def close_unless_a_request_began(self, previous):
        """Close the connection if no request has begun since `previous` (the request before the
        one awaited; None on a new connection)."""
        if self.cycle is previous:
            self.transport.close()

    async def guard(self, scope, receive, send):
        """The application, behind this connection's checks of framing and load."""
        names = {name for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            await send_error(send, 400, "a request may not carry both Content-Length and Transfer-Encoding", "ambiguous_framing")
            return
        busy = sum(c.busy() for c in self.connections)
        if busy > self.max_connections:
            message = f"busy: {self.max_connections} requests are in progress; try again shortly"
            await send_error(send, 503, message, "overloaded", [(b"retry-after", b"1")])
            return
        try:
            await self.guarded_app(scope, receive, send)
        except ClientDisconnect:
            log_departure(scope)


def protocol_class(header_timeout, max_connections):
    """GuardedH11 with these limits, for uvicorn.Config(http=...)."""
    return type("ChatH11Protocol", (GuardedH11,), {"header_timeout": header_timeout, "max_connections": max_connections})
