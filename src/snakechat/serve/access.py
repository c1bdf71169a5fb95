"""Who may talk to the chat server: the Host a request names and the Origin a browser sends.

A server on 127.0.0.1 is still reachable from any web page the user opens: by DNS rebinding (a
name the attacker controls resolves to 127.0.0.1, so the request's Host is that name) and by
cross-site requests a page may send without asking (a "simple" POST). So:

- the Host header must name the bound address: the host given to --host (and for a loopback bind
  also `localhost`, `127.0.0.1` and `[::1]`); for a wildcard bind (0.0.0.0, ::) any IP literal,
  `localhost` and this machine's host name. Other names are added with --allowed-hosts (`*`: any).
  The port is not compared (a forwarded port may differ).
- a request with an Origin header (browsers send one on cross-origin requests and on every POST)
  must come from the page's own origin (`http://<Host>`) or one of --allowed-origins (`*`: any);
  those get CORS headers and preflight answers (Starlette's CORSMiddleware), the rest 403.

Refusals use the API's error shape. Content-Type is checked where a body is read
(snakechat.serve.chat_app.read_body).
"""

import ipaddress
import socket
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD = frozenset({"", "0.0.0.0", "::"})


def host_name(value):
    """The host in a Host header or a --host/--allowed-hosts value, without its port and brackets, lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def is_ip(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(name):
    return name == "localhost" or (is_ip(name) and ipaddress.ip_address(name).is_loopback)


@dataclass(frozen=True)
class Access:
    """Allowed Host names (`any_ip`: every IP literal too) and allowed cross-origin origins."""

    hosts: frozenset
    any_ip: bool = False
    origins: tuple = ()

    @classmethod
    def for_host(cls, bind, allowed_hosts=(), allowed_origins=()):
        """The access of a server bound to `bind`, with these extra hosts and origins allowed."""
        bind = host_name(bind)
        hosts = {bind, *(host_name(h) for h in allowed_hosts if h.strip())}
        wildcard = bind in WILDCARD
        if wildcard or is_loopback(bind):
            hosts |= LOOPBACK
        if wildcard:
            hosts.add(socket.gethostname().lower())  # not getfqdn: a DNS lookup that may hang start-up
        origins = tuple(o.strip().rstrip("/") for o in allowed_origins if o.strip())
        return cls(frozenset(hosts - WILDCARD), wildcard, origins)

    def host_allowed(self, header):
        name = host_name(header)
        return "*" in self.hosts or name in self.hosts or (self.any_ip and is_ip(name))

    def origin_allowed(self, origin, host_header):
        """Whether a request from `origin` may be served: the page's own origin, or one allowed."""
        return origin in (f"http://{host_header}", f"https://{host_header}") or "*" in self.origins or origin in self.origins


def refuse(status, message, code):
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}, status)


class AccessGuard:
    """ASGI middleware: refuses requests whose Host or Origin `access` does not allow."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host")
        if host is None:
            response = refuse(400, "a Host header is required", "missing_host")
        elif not self.access.host_allowed(host):
            response = refuse(403, f"the Host {host!r:.100} is not this server's; start it with --allowed-hosts {host_name(host)!r:.100} to serve that name", "host_not_allowed")
        elif (origin := headers.get("origin")) is not None and not self.access.origin_allowed(origin, host):
            response = refuse(403, f"cross-origin requests from {origin!r:.100} are refused; start the server with --allowed-origins {origin!r:.100} to allow them", "origin_not_allowed")
        else:
            return await self.app(scope, receive, send)
        response.headers["Connection"] = "close"  # its body, if any, is not read
        await response(scope, receive, send)
