"""The web chat: a real server on 127.0.0.1 with a tiny checkpoint, driven by headless Chromium and by HTTP."""

import http.client
import json
import shutil
import threading

import pytest

from snakechat.chat_web import Limits, make_server
from snakechat.checkpoint import load_model
from snakechat.engine import Engine
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from tiny_chat_model import write_checkpoint

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIMITS = Limits(max_message_chars=200, max_turns=3, max_tokens=40, max_concurrent=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    model, tok, _ = load_model(write_checkpoint(root / "sft" / "tiny", root / "tok"))
    srv = make_server(Engine(model.eval(), tok), tok, port=0, limits=LIMITS, temperature=1.0, top_k=0, seed=1)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def post(server, body, raw=None):
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    data = raw if raw is not None else json.dumps(body).encode()
    conn.request("POST", "/chat/completions", body=data, headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def error_of(server, body=None, raw=None):
    conn, resp = post(server, body, raw)
    status, payload = resp.status, json.loads(resp.read())
    conn.close()
    return status, payload["error"]


def test_binds_localhost_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


def test_api_streams_a_reply_in_pieces(server):
    conn, resp = post(server, {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 30, "seed": 5})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = []
    while line := resp.readline():  # chunked transfer decoded by http.client, read as it arrives
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
    conn.close()
    tokens = [e["token"] for e in events if "token" in e]
    assert len(tokens) > 1
    assert events[-1] == {"done": True, "pieces": len(tokens)}


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"messages": [{"role": "user", "content": "x" * 201}]}, 400, "201 characters; the limit is 200"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 3 + [{"role": "user", "content": "c"}]}, 400, "4 user turns; the limit is 3"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 41}, 400, "'max_tokens' must be between 1 and 40"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "'temperature' must be a number"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "roles must alternate"),
        ({"messages": []}, 400, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, 400, "last message must be from the user"),
    ],
)
def test_api_limits_give_clear_errors(server, body, status, words):
    got_status, error = error_of(server, body)
    assert got_status == status
    assert words in error


def test_api_rejects_bad_json_and_huge_bodies(server):
    assert error_of(server, raw=b"{not json")[0] == 400
    status, error = error_of(server, raw=b"x" * (LIMITS.max_body_bytes + 1))
    assert status == 413 and "larger than the limit" in error


def test_api_busy_when_all_slots_are_taken(server):
    assert server.slots.acquire(blocking=False)  # as if a reply were being generated
    try:
        status, error = error_of(server, {"messages": [{"role": "user", "content": "hi"}]})
    finally:
        server.slots.release()
    assert status == 503 and "busy" in error
    conn, resp = post(server, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert resp.status == 200  # the slot is free again
    resp.read()
    conn.close()


def test_health_and_unknown_paths(server):
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read()) == {"status": "ok"}
    conn.request("GET", "/nope")
    resp = conn.getresponse()
    assert resp.status == 404 and "no page" in json.loads(resp.read())["error"]
    conn.close()


def test_browser_chat_streams_replies(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    host, port = server.server_address
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = context.new_page()
            page.goto(f"http://{host}:{port}/")
            assert page.title() == "snakechat"
            # record the reply's length at every change, to see it grow while it streams; each change's
            # own record, since a fast server's tokens can all arrive in one read and one observer call
            page.evaluate(
                """() => { window.lengths = [];
                new MutationObserver((records) => { for (const r of records) {
                  if (r.target.classList && r.target.classList.contains('assistant'))
                    for (const n of r.addedNodes) window.lengths.push(n.textContent.length); } })
                .observe(document.getElementById('messages'), {subtree: true, childList: true}); }"""
            )
            page.fill("#input", "hello there")
            page.press("#input", "Enter")
            page.wait_for_selector(".message.assistant[data-done='true']", timeout=60_000)
            assert page.inner_text(".message.user") == "hello there"
            reply = page.locator(".message.assistant").first
            assert int(reply.get_attribute("data-chunks")) > 1
            lengths = [n for n in page.evaluate("window.lengths") if n > 0]
            assert len(set(lengths)) > 1 and lengths == sorted(lengths)  # grew piece by piece
            assert len(reply.inner_text()) > 0

            page.fill("#input", "and then?")  # a second turn in the same conversation
            page.click("#send")
            page.wait_for_function("document.querySelectorAll(\".assistant[data-done='true']\").length == 2", timeout=60_000)

            page.fill("#input", "y" * 300)  # over the server's limit: the error is shown, not a reply
            page.press("#input", "Enter")
            page.wait_for_selector(".message.error", timeout=30_000)
            assert "limit is 200" in page.inner_text(".message.error")

            page.click("#new-chat")
            assert page.locator(".message").count() == 0
        finally:
            context.close()


def test_chat_cli_one_prompt_and_interactive(tmp_path, monkeypatch, capsys):
    """The terminal chat: -p answers once (as a real command); the loop takes turns, /new and /quit."""
    import io
    import os
    import subprocess
    import sys

    from snakechat import chat_cli

    checkpoint = tmp_path / "results" / "sft" / "tiny"
    write_checkpoint(checkpoint, tmp_path / "tok")
    flags = ["--max-tokens", "12", "--temperature", "1.0", "--top-k", "0"]
    one = subprocess.run([sys.executable, "-m", "snakechat.chat_cli", *flags, "--checkpoint", str(checkpoint), "-p", "hello there"],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip()
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/new\nhi again\n/quit\n"))
    chat_cli.main([*flags, "--model", "tiny", "--stage", "sft", "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert out.count("snakechat> ") == 2 and "(new conversation)" in out
    with pytest.raises(SystemExit) as exit_info:
        chat_cli.main(["--model", "nope", "--results", str(tmp_path / "results")])
    assert exit_info.value.code == 2 and "no checkpoint at" in capsys.readouterr().err
