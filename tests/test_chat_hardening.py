"""The chat server under hostile clients (issue 33, items 1-5): idle connections, ambiguous framing,
clients that leave, requests from other sites and names, bad ports; raw sockets against the real server."""

import contextlib
import json
import logging
import shutil
import socket
import time

import pytest

from chat_server import MODEL, QUESTION, direct, exchange, make_checkpoint, post, responses, serving, user
from snakechat.model import calculator
from snakechat.model.engine import Engine
from snakechat.serve.access import Access
from snakechat.serve.chat_api import Limits
from snakechat.serve.chat_model import load_engine
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)

CHAT = {"model": MODEL, "messages": [user("hi")], "max_tokens": 2}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return load_engine(make_checkpoint(tmp_path_factory.mktemp("hardening")))


@pytest.fixture(scope="module")
def server(engine):
    with serving(engine) as chat:
        yield chat


def ask(port, body=CHAT, headers=(), path="/v1/chat/completions"):
    """One request on its own connection: (status, headers, decoded JSON body)."""
    ((status, head, raw),) = responses(exchange(port, post(port, body, path=path, headers=[*headers, ("Connection", "close")])))
    return status, head, json.loads(raw) if raw else None


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def server_log():
    """What the server logs at WARNING and above (from when the server has configured its logging)."""
    handler = Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def test_idle_connections_do_not_lock_out_requests(engine):
    """Dozens of connections that send nothing (or half a request line) do not count against
    --max-connections: a real request is answered, and the longest-idle ones are closed."""
    limits = Limits(max_message_chars=200, max_turns=3, max_tokens=5, max_concurrent=1, max_connections=4, body_timeout=5.0)
    with serving(engine, limits) as chat:
        idle = [socket.create_connection(("127.0.0.1", chat.port), timeout=5) for _ in range(40)]
        for s in idle[::2]:
            s.sendall(b"POST /v1/chat/comp")
        time.sleep(0.3)
        try:
            for _ in range(3):
                status, _, body = ask(chat.port)
                assert status == 200 and body["choices"][0]["finish_reason"] == "length"
            closed = 0
            for s in idle:
                s.settimeout(0.5)
                try:
                    closed += s.recv(1) == b""
                except ConnectionResetError:  # closed before its bytes were read
                    closed += 1
                except TimeoutError:
                    pass
            assert closed >= 40 - limits.max_connections
        finally:
            for s in idle:
                s.close()


def test_content_length_with_transfer_encoding_is_refused(server):
    """A request framed both ways is refused and its connection closed: the request hidden in its
    body (by one framing) and the one after it are never run."""
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(b"{}"), b"{}")
    data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body)) + body + hidden + b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answers = responses(exchange(server.port, data))
    assert [status for status, _, _ in answers] == [400]
    assert answers[0][1]["connection"] == "close" and json.loads(answers[0][2])["error"]["code"] == "ambiguous_framing"


def slow_calculator(engine):
    model, tok = engine
    return Engine(model.model, tok, tool=lambda expr: (time.sleep(1.0), calculator.run(expr))[1]), tok


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_stops_its_generation(engine, stream):
    """The calculator takes 1 s; the client leaves meanwhile: the reply stops at the next token,
    the slot is given back, and the log has one line for it (no traceback), streamed or not."""
    with serving(slow_calculator(engine), log_level="warning") as chat, server_log() as log:
        generations = []
        start = chat.start
        chat.start = lambda request: generations.append(start(request)) or generations[-1]
        with socket.create_connection(("127.0.0.1", chat.port), timeout=10) as s:
            s.sendall(post(chat.port, {"model": MODEL, "messages": [user(QUESTION)], "temperature": 0, "stream": stream}))
            deadline = time.monotonic() + 10
            while not chat.active and time.monotonic() < deadline:
                time.sleep(0.01)
        left = time.monotonic()
        while chat.active and time.monotonic() < left + 10:
            time.sleep(0.02)
        assert chat.active == 0 and time.monotonic() - left < 2.5
        _, full = direct(engine, [user(QUESTION)])
        assert generations and len(generations[0].reply.tokens) < len(full.tokens)
        assert ask(chat.port)[0] == 200
    assert len(log) == 1 and log[0].exc_info is None and "went away during POST /v1/chat/completions" in log[0].getMessage()


def test_client_leaving_mid_body_is_one_log_line(engine):
    with serving(engine, log_level="warning") as chat, server_log() as log:
        with socket.create_connection(("127.0.0.1", chat.port), timeout=10) as s:
            s.sendall(post(chat.port, CHAT)[:-5])
            time.sleep(0.2)
        time.sleep(0.3)
        assert ask(chat.port)[0] == 200
    assert len(log) == 1 and log[0].exc_info is None and "went away during POST" in log[0].getMessage()


def test_host_must_name_the_server(server):
    """DNS rebinding: a page on another name that resolves to 127.0.0.1 sends its own name as Host."""
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "[::1]"):
        assert ask(server.port, headers=[("Host", host)])[0] == 200
    status, _, body = ask(server.port, headers=[("Host", f"rebind.example:{server.port}")])
    assert status == 403 and body["error"]["code"] == "host_not_allowed" and "--allowed-hosts 'rebind.example'" in body["error"]["message"]
    assert responses(exchange(server.port, b"GET /v1/models HTTP/1.1\r\nHost: rebind.example\r\n\r\n"))[0][0] == 403


def test_access_rules():
    loopback = Access.for_host("127.0.0.1")
    assert loopback.host_allowed("localhost:8000") and loopback.host_allowed("[::1]:80") and not loopback.host_allowed("evil.example")
    assert not loopback.host_allowed("10.0.0.1")
    wildcard = Access.for_host("0.0.0.0")
    assert wildcard.host_allowed("10.0.0.1:8000") and wildcard.host_allowed("[fe80::1]") and not wildcard.host_allowed("evil.example:8000")
    named = Access.for_host("127.0.0.1", ["chat.example.org"])
    assert named.host_allowed("chat.example.org:443") and Access.for_host("127.0.0.1", ["*"]).host_allowed("anything")
    assert loopback.origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000") and not loopback.origin_allowed("http://127.0.0.1:9000", "127.0.0.1:8000")


def test_cross_origin_requests_are_refused_and_json_is_required(server):
    """What a page on another site can send without a preflight (a form-like POST, or a POST with
    its Origin) is refused before any reply is generated."""
    prompts = len(server.prompts)
    status, _, body = ask(server.port, headers=[("Origin", "http://evil.example")])
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        ((status, head, raw),) = responses(exchange(server.port, post(server.port, CHAT, headers=[("Content-Type", kind), ("Connection", "close")])))
        assert status == 415 and "application/json" in json.loads(raw)["error"]["message"] and head["connection"] == "close"
    assert len(server.prompts) == prompts
    same = ask(server.port, headers=[("Host", f"127.0.0.1:{server.port}"), ("Origin", f"http://127.0.0.1:{server.port}")])
    assert same[0] == 200 and "access-control-allow-origin" not in same[1]
    assert ask(server.port, headers=[("Content-Type", "application/json; charset=utf-8")])[0] == 200


def test_allowed_origins_get_cors_and_preflight(engine):
    app = "http://app.example:3000"
    with serving(engine, access=Access.for_host("127.0.0.1", allowed_origins=[app])) as chat:
        preflight = (b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: %s\r\nAccess-Control-Request-Method: POST\r\n"
                     b"Access-Control-Request-Headers: content-type, authorization\r\nConnection: close\r\n\r\n")
        ((status, head, _),) = responses(exchange(chat.port, preflight % app.encode()))
        assert status == 200 and head["access-control-allow-origin"] == app
        assert "POST" in head["access-control-allow-methods"] and "authorization" in head["access-control-allow-headers"].lower()
        status, head, body = ask(chat.port, headers=[("Origin", app)])
        assert status == 200 and head["access-control-allow-origin"] == app and body["choices"]
        ((status, head, _),) = responses(exchange(chat.port, preflight % b"http://evil.example"))
        assert status == 403 and "access-control-allow-origin" not in head
        assert ask(chat.port, headers=[("Origin", "http://evil.example")])[0] == 403


def test_browser_on_another_site_is_refused_unless_allowed(server, engine):
    """In Chromium: a page on another origin (the chat page of `server`, another port) cannot call
    an API that does not allow it (its preflight is refused, and a no-cors "simple" POST generates
    nothing) but can call one whose --allowed-origins names it; a name that resolves to 127.0.0.1
    (DNS rebinding) gets 403 for its Host."""
    playwright = pytest.importorskip("playwright.sync_api")
    from test_chat_web import CHROMIUM, CHROMIUM_FLAGS

    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    site = f"http://127.0.0.1:{server.port}"
    call = """async ([url, body, mode, kind]) => {
        try {
            const r = await fetch(url, {method: "POST", mode, headers: {"Content-Type": kind}, body: JSON.stringify(body)});
            return {status: r.status, type: r.type, body: r.type === "opaque" ? null : await r.json()};
        } catch (e) { return {error: String(e)}; } }"""
    with serving(engine) as refusing, serving(engine, access=Access.for_host("127.0.0.1", allowed_origins=[site])) as allowing, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_FLAGS, "--host-resolver-rules=MAP rebind.example 127.0.0.1"])
        try:
            page = browser.new_page()
            page.goto(site + "/")
            refused = page.evaluate(call, [f"http://127.0.0.1:{refusing.port}/v1/chat/completions", CHAT, "cors", "application/json"])
            assert "Failed to fetch" in refused.get("error", "")
            opaque = page.evaluate(call, [f"http://127.0.0.1:{refusing.port}/v1/chat/completions", CHAT, "no-cors", "text/plain"])
            assert opaque == {"status": 0, "type": "opaque", "body": None} and refusing.prompts == []
            allowed = page.evaluate(call, [f"http://127.0.0.1:{allowing.port}/v1/chat/completions", CHAT, "cors", "application/json"])
            assert allowed["status"] == 200 and allowed["body"]["choices"][0]["finish_reason"] == "length"
            response = page.goto(f"http://rebind.example:{server.port}/")
            assert response.status == 403 and "host_not_allowed" in page.content()
        finally:
            browser.close()
