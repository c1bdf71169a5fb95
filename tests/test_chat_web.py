"""The web chat: the real uvicorn server on 127.0.0.1 with a tiny checkpoint, driven by the official
`openai` client, by raw HTTP on sockets, and by headless Chromium; and the terminal chat."""

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import openai
import pytest

from chat_server import ANSWER, GET_MODELS, LIMITS, MODEL, QUESTION, SPECIALS, direct, exchange, make_checkpoint, post, responses, serving, user
from snakechat.model import calculator
from snakechat.model.conversation import render_conversation, render_for_completion
from snakechat.model.engine import Engine
from snakechat.serve.chat_api import Limits
from snakechat.serve import tool_text
from snakechat.serve.chat_model import load_engine
from snakechat.chat_web import listen
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)

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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT trained to answer QUESTION with ANSWER (calculator call included), saved as results/sft/tiny."""
    return make_checkpoint(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def engine(checkpoint):
    return load_engine(checkpoint)


@pytest.fixture(scope="module")
def server(engine):
    with serving(engine) as chat:
        yield chat


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c



# --- the OpenAI client -------------------------------------------------------------------------


def test_models_lists_the_served_checkpoint(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "snakechat"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_reply_with_a_calculator_call(client, engine):
    done = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0)
    prompt, reply = direct(engine, [user(QUESTION)])
    assert done.object == "chat.completion" and done.model == MODEL
    choice = done.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert reply.parts == ANSWER and choice.message.content == "it is <<6*7=42>>. so 42" == tool_text.render(ANSWER)
    assert choice.message.model_extra["content_parts"] == ANSWER  # the exact parts, beside the string
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (len(prompt), len(reply.tokens))
    assert done.usage.total_tokens == len(prompt) + len(reply.tokens)


def test_plain_text_reply_is_a_string(client, engine):
    done = client.chat.completions.create(model=MODEL, messages=[user("hi")], temperature=1.0, seed=7)
    _, reply = direct(engine, [user("hi")], temperature=1.0, seed=7)
    message = done.choices[0].message
    assert isinstance(message.content, str) and message.content == tool_text.render(reply.parts)
    assert ("content_parts" in message.model_extra) == tool_text.has_tools(reply.parts)


def test_streamed_reply_matches_the_whole_one(client, engine):
    stream = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    *content_chunks, last, usage = chunks
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert last.choices[0].finish_reason == "stop" and usage.choices == []
    text, parts, pieces = "", [], 0
    for chunk in content_chunks:
        delta = chunk.choices[0].delta
        text += delta.content  # a string in every chunk: the usual loop works
        pieces += bool(delta.content)
        if "content_parts" in delta.model_extra:  # a calculator call arrives whole, with its parts
            assert delta.content == tool_text.render(delta.model_extra["content_parts"])
            parts += delta.model_extra["content_parts"]
        elif delta.content:
            parts.append({"type": "text", "text": delta.content})
    assert pieces > 3  # streamed piece by piece
    assert text == tool_text.render(ANSWER) and tool_text.parse(text) == ANSWER
    assert [p for p in parts if p["type"] != "text"] == ANSWER[1:3]
    prompt, reply = direct(engine, [user(QUESTION)])
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (len(prompt), len(reply.tokens))


def test_max_tokens_ends_with_length(client):
    for key in ("max_tokens", "max_completion_tokens"):
        done = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, **{key: 3})
        assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 3
        assert done.choices[0].message.content == "it is"[: len(done.choices[0].message.content)]
    stream = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, max_tokens=3, stream=True)
    assert [c.choices[0].finish_reason for c in stream][-1] == "length"


def test_a_reply_cut_inside_the_tool_call_keeps_its_part(client):
    # it is = 3 tokens here, then <|python_start|> 6 * (7 ...): cut inside the call
    done = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, max_tokens=6)
    message = done.choices[0].message
    assert done.choices[0].finish_reason == "length"
    last = message.model_extra["content_parts"][-1]
    assert last["type"] == "python" and "6*7".startswith(last["text"]) and message.content.endswith(f"<<{last['text']}>>")


def test_system_message_is_rendered_as_in_training(client, server, engine):
    _, tok = engine
    system = {"role": "system", "content": "You are terse."}
    merged = client.chat.completions.create(model=MODEL, messages=[user("You are terse.\n\nhello there")], temperature=0)
    with_system = client.chat.completions.create(model=MODEL, messages=[system, user("hello there")], temperature=0)
    assert server.prompts[-1] == server.prompts[-2] == render_for_completion(tok, [system, user("hello there")])
    assert with_system.choices[0].message.content == merged.choices[0].message.content
    developer = client.chat.completions.create(model=MODEL, messages=[{**system, "role": "developer"}, user("hello there")], temperature=0)
    assert server.prompts[-1] == server.prompts[-2] and developer.usage == with_system.usage


def test_sampling_settings(client, engine):
    def reply(**settings):
        return client.chat.completions.create(model=MODEL, messages=[user("and then?")], max_tokens=20, **settings).choices[0].message.content

    greedy = reply(temperature=0)
    assert reply(temperature=1.5, seed=3) == reply(temperature=1.5, seed=3)  # seeded
    assert len({json.dumps(reply(temperature=2.0, seed=s)) for s in range(4)}) > 1  # and really sampled
    # only the most likely token left: greedy, whatever the temperature and seed
    assert reply(temperature=2.0, top_p=1e-9, seed=5) == greedy
    assert reply(temperature=2.0, extra_body={"top_k": 1}, seed=5) == greedy
    assert tool_text.render(direct(engine, [user("and then?")], max_tokens=20)[1].parts) == greedy


def test_stop_strings(client):
    done = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, stop=[" is", "zzz"])
    assert done.choices[0].message.content == "it" and done.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, stop=". so", stream=True)
    chunks = list(stream)
    assert [p for c in chunks if (p := c.choices[0].delta.content)] and chunks[-1].choices[0].finish_reason == "stop"
    done = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, stop=". so")
    assert done.choices[0].message.content == "it is <<6*7=42>>"


@pytest.mark.parametrize(
    "settings, error, param, words",
    [
        ({"model": "gpt-4o"}, openai.NotFoundError, "model", "does not exist"),
        ({"n": 2}, openai.BadRequestError, "n", "'n' must be 1"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "x"}, user("hi")]}, openai.BadRequestError, "messages[0].role", "unknown role 'tool'"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError, "messages[0].role", "unknown role 'wizard'"),
        ({"max_tokens": 41}, openai.BadRequestError, "max_tokens", "<= 40"),
        ({"temperature": 2.5}, openai.BadRequestError, "temperature", "<= 2.0"),
        ({"top_p": 0}, openai.BadRequestError, "top_p", "> 0.0"),
        ({"stop": ["a", "b", "c", "d", "e"]}, openai.BadRequestError, "stop", "1 to 4"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, openai.BadRequestError, "tools", "not supported"),
        ({"logprobs": True}, openai.BadRequestError, "logprobs", "not supported"),
        ({"messages": [user("x" * 201)]}, openai.BadRequestError, "messages[0].content", "201 characters; the limit is 200"),
        ({"messages": [user("a"), {"role": "assistant", "content": "b"}] * 3 + [user("c")]}, openai.BadRequestError, "messages", "4 user turns; the limit is 3"),
        ({"messages": [user("a"), {"role": "assistant", "content": "b"}]}, openai.BadRequestError, "messages", "last message must be from the user"),
        ({"messages": [{"role": "assistant", "content": "b"}, user("a")]}, openai.BadRequestError, "messages", "expected a user message"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, openai.BadRequestError, "messages[0].content[0]", "'text'"),
        ({"messages": [user("a"), {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, user("b")]},
         openai.BadRequestError, "messages[1].tool_calls", "not supported"),
    ],
)
def test_errors_are_openai_shaped_and_map_to_client_exceptions(client, settings, error, param, words):
    request = {"model": MODEL, "messages": [user("hi")], **settings}
    with pytest.raises(error) as caught:
        client.chat.completions.create(**request)
    assert caught.value.param == param and words in caught.value.message
    assert caught.value.type == "invalid_request_error"


def test_busy_server_answers_503_with_retry_after(client, server):
    server.active += 1  # as if a reply were being generated (nothing else runs now)
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=MODEL, messages=[user("hi")])
    finally:
        server.active -= 1
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "1"
    assert "busy" in caught.value.message
    assert client.chat.completions.create(model=MODEL, messages=[user("hi")], max_tokens=2).choices  # free again


def test_tool_call_round_trip_gives_the_model_its_own_tokens(client, server, engine):
    """Turn 1's message, carried back by the client as it came, renders into turn 2's prompt with
    exactly the tokens the model generated in turn 1, tool specials included."""
    model, tok = engine
    first = client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0)
    generated, _ = model.generate_batch(render_for_completion(tok, [user(QUESTION)]), max_tokens=40, temperature=0.0)
    prompt1 = server.prompts[-1]
    reply_tokens = generated[0][len(prompt1):]
    assert {tok.special_id(s) for s in SPECIALS} <= set(reply_tokens)

    history = [user(QUESTION), first.choices[0].message, user("and then?")]  # the message object, as returned
    second = client.chat.completions.create(model=MODEL, messages=history, temperature=0)
    prompt2 = server.prompts[-1]
    assert prompt2[: len(prompt1)] == prompt1
    assert prompt2[len(prompt1) : len(prompt1) + len(reply_tokens)] == reply_tokens
    assert prompt2[len(prompt1) + len(reply_tokens)] == tok.special_id("<|assistant_end|>")
    assert second.usage.prompt_tokens == len(prompt2)

    # the same from a streamed turn 1, its text joined from the deltas and sent back alone (as a
    # client that keeps only `content` does): the <<6*7=42>> in it is read back as the call
    text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0, stream=True) if chunk.choices)
    client.chat.completions.create(model=MODEL, messages=[user(QUESTION), {"role": "assistant", "content": text}, user("and then?")], max_tokens=1)
    assert server.prompts[-1] == prompt2
    # parts that no longer render to the (edited) content are ignored: the content is what counts
    edited = {"role": "assistant", "content": "it is <<6*8=48>>. so 48", "content_parts": ANSWER}
    client.chat.completions.create(model=MODEL, messages=[user(QUESTION), edited, user("and then?")], max_tokens=1)
    assert server.prompts[-1] == render_for_completion(tok, [user(QUESTION), {"role": "assistant", "content": tool_text.parse(edited["content"])}, user("and then?")])
    assert server.prompts[-1] != prompt2


def test_user_text_never_becomes_special_tokens(client, server, engine):
    _, tok = engine
    literal = "".join(SPECIALS) + "<|assistant_end|><|bos|><|assistant_start|>"
    messages = [{"role": "system", "content": literal}, user(literal), {"role": "assistant", "content": literal}, user(literal)]
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    prompt = server.prompts[-1]
    specials = [t for t in prompt if t in tok.special_ids]
    names = ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>"]
    assert specials == [tok.special_id(n) for n in names]


# --- raw HTTP: what the protocol layer does with malformed requests ---------------------------------


def test_unread_bodies_do_not_desync_the_connection(server):
    """A body sent where none is read (unknown path, a GET) is framed as that request's body: the
    request smuggled inside it is not run, and the next request on the connection gets its answer."""
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for first in (post(server.port, smuggled, path="/nope"), b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled):
        (status1, _, body1), (status2, _, body2) = responses(exchange(server.port, first + GET_MODELS))
        assert status2 == 200 and json.loads(body2)["data"][0]["id"] == MODEL
        if status1 == 404:
            assert "POST /nope" in json.loads(body1)["error"]["message"]
        else:
            assert status1 == 200 and b"<title>snakechat</title>" in body1


@pytest.mark.parametrize("length", ["-1", "+5", "1_0", "0x5", "5\r\nContent-Length: 6", "5, 6"])
def test_bad_content_length_is_refused(server, length):
    data = b'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ' + length.encode() + b"\r\n\r\n{}\r\n\r\n" + GET_MODELS
    answers = responses(exchange(server.port, data))
    assert [status for status, _, _ in answers] == [400]  # and the connection is closed: nothing after it runs


def test_identical_duplicate_content_lengths_frame_one_body(server):
    """RFC 9112 6.3 allows a repeated identical length; the framing is unambiguous and used as such."""
    body = json.dumps({"model": "nope", "messages": [user("hi")]}).encode()
    data = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body)) + body + GET_MODELS
    (s1, _, b1), (s2, _, _) = responses(exchange(server.port, data))
    assert (s1, s2) == (404, 200) and json.loads(b1)["error"]["code"] == "model_not_found"


def test_malformed_bodies_get_400_or_413(server):
    cases = {
        b"{not json": "not valid JSON",
        b"[" * 4000 + b"]" * 4000: "nested too deeply",  # under the size limit
        b"[]": "must be a JSON object",
        b"\xff\xfe": "not valid JSON",
    }
    for body, words in cases.items():
        ((status, _, reply),) = responses(exchange(server.port, post(server.port, body, headers=[("Connection", "close")])))
        assert status == 400 and words in json.loads(reply)["error"]["message"]
    too_big = b"x" * (LIMITS.max_body_bytes + 1)
    ((status, headers, reply),) = responses(exchange(server.port, post(server.port, too_big)))
    assert status == 413 and "larger than the limit" in json.loads(reply)["error"]["message"] and headers["connection"] == "close"
    chunked = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(too_big[i:i + 4096]), too_big[i:i + 4096]) for i in range(0, len(too_big), 4096)) + b"0\r\n\r\n"
    ((status, _, _),) = responses(exchange(server.port, chunked))
    assert status == 413


def test_page_and_unknown_paths(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html") and b"/v1/chat/completions" in resp.read()
    for method, path, status in (("GET", "/chat/completions", 404), ("POST", "/chat/completions", 404), ("GET", "/v1/chat/completions", 405)):
        conn.request(method, path, body=b"{}" if method == "POST" else None)
        resp = conn.getresponse()
        error = json.loads(resp.read())["error"]
        assert resp.status == status and path in error["message"] and error["type"] == "invalid_request_error"
    conn.close()


def test_stalled_body_times_out_and_frees_its_connection(engine):
    """A client that announces more body than it sends holds a connection slot only until
    --body-timeout: it gets 408 and is closed, and the server takes connections again."""
    limits = Limits(max_message_chars=200, max_turns=3, max_tokens=5, max_concurrent=1, max_connections=2, body_timeout=1.0)
    with serving(engine, limits) as chat:
        stalled = []
        for _ in range(2):  # 2 requests in progress fill a limit of 2
            s = socket.create_connection(("127.0.0.1", chat.port), timeout=10)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model\":")
            stalled.append(s)
        time.sleep(0.2)
        started = time.monotonic()
        full = responses(exchange(chat.port, post(chat.port, {"model": MODEL, "messages": [user("hi")]}, headers=[("Connection", "close")])))
        assert full[0][0] == 503 and full[0][1]["retry-after"] == "1"  # every slot is held
        assert json.loads(full[0][2])["error"]["code"] == "overloaded"
        for s in stalled:
            raw = b""
            while chunk := s.recv(65536):  # the server answers and closes
                raw += chunk
            ((status, headers, body),) = responses(raw)
            assert status == 408 and headers["connection"] == "close" and "did not arrive within 1 s" in json.loads(body)["error"]["message"]
            s.close()
        assert time.monotonic() - started < 5
        time.sleep(0.2)
        ((status, _, _),) = responses(exchange(chat.port, post(chat.port, {"model": MODEL, "messages": [user("hi")]}, headers=[("Connection", "close")])))
        assert status == 200


def dribble_until_closed(sock, data, every=0.2):
    """Send `data` a byte every `every` seconds until the server closes: seconds it took, or None if it never did."""
    started = time.monotonic()
    sock.settimeout(every)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    return None


def test_slow_headers_are_cut_off_and_free_their_connection(engine):
    """A client sending its request line and headers a byte at a time (slowloris) is disconnected
    after --body-timeout, on a new connection and on a kept-alive one after a reply; a request
    that keeps to the limit is answered."""
    limits = Limits(max_message_chars=200, max_turns=3, max_tokens=5, max_concurrent=1, max_connections=3, body_timeout=1.0)
    headers = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    with serving(engine, limits) as chat:
        with socket.create_connection(("127.0.0.1", chat.port), timeout=10) as s:
            took = dribble_until_closed(s, headers)
        assert took is not None and 0.9 < took < 3
        with socket.create_connection(("127.0.0.1", chat.port), timeout=10) as s:
            s.sendall(post(chat.port, {"model": MODEL, "messages": [user("hi")]}))
            reply = s.recv(65536)
            while len(reply.partition(b"\r\n\r\n")[2]) < int(responses(reply)[0][1].get("content-length", 0)):
                reply += s.recv(65536)
            assert responses(reply)[0][0] == 200
            took = dribble_until_closed(s, headers)
        assert took is not None and took < 3
        ((status, _, _),) = responses(exchange(chat.port, post(chat.port, {"model": MODEL, "messages": [user("hi")]}, headers=[("Connection", "close")])))
        assert status == 200


def test_client_leaving_a_stream_stops_its_generation_and_frees_the_slot(engine):
    """The calculator here takes 1 s: the client leaves during it; the reply stops at the next token
    instead of running to its end, and the slot is given back."""
    model, tok = engine
    slow = Engine(model.model, tok, tool=lambda expr: (time.sleep(1.0), calculator.run(expr))[1])
    with serving((slow, tok)) as chat:
        generations = []
        start = chat.start
        chat.start = lambda request: generations.append(start(request)) or generations[-1]
        with socket.create_connection(("127.0.0.1", chat.port), timeout=10) as s:
            s.sendall(post(chat.port, {"model": MODEL, "messages": [user(QUESTION)], "stream": True, "temperature": 0}))
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while chat.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert chat.active == 0
        _, full = direct(engine, [user(QUESTION)])
        assert generations and len(generations[0].reply.tokens) < len(full.tokens)
        done = openai.OpenAI(base_url=f"http://127.0.0.1:{chat.port}/v1", api_key="unused", max_retries=0).chat.completions.create(
            model=MODEL, messages=[user("hi")], max_tokens=2)
        assert done.choices[0].finish_reason == "length"


# --- the command line ---------------------------------------------------------------------------


def test_settings_are_checked_at_start_up(checkpoint, capsys):
    from snakechat import chat_web

    for flag, value, words in [("--max-concurrent", "0", "must be >= 1, got 0"), ("--max-tokens", "-1", "must be >= 1, got -1"),
                               ("--max-connections", "0", "must be >= 1, got 0"), ("--port", "70000", "must be <= 65535, got 70000"), ("--body-timeout", "0", "must be >= 0.001"), ("--port", "x", "'x' is not an integer")]:
        with pytest.raises(SystemExit) as exit_info:
            chat_web.main(["--checkpoint", str(checkpoint), flag, value])
        assert exit_info.value.code == 2 and f"argument {flag}: {words}" in capsys.readouterr().err
    with socket.socket() as busy:  # checked before the model is loaded
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            chat_web.main(["--checkpoint", str(checkpoint / "nowhere"), "--port", str(port)])
        assert exit_info.value.code == 2 and "no checkpoint at" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_info:
            chat_web.main(["--checkpoint", str(checkpoint), "--port", str(port)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"chat_web: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    with pytest.raises(ValueError, match="max_concurrent must be >= 1, got 0"):
        Limits(max_concurrent=0)


def test_listening_socket_gets_tcp_nodelay_connections():
    """asyncio turns Nagle off only for sockets made with proto IPPROTO_TCP; with it on, each
    response's body waited 40 ms for the client's delayed ACK (bench/serve.py showed it)."""
    with listen("127.0.0.1", 0) as sock, socket.create_connection(sock.getsockname()[:2]):
        accepted, _ = sock.accept()
        with accepted:
            assert accepted.proto == socket.IPPROTO_TCP


def test_command_serves_until_interrupted(checkpoint):
    process = subprocess.Popen([sys.executable, "-m", "snakechat.chat_web", "--model", "tiny", "--results", str(checkpoint.parents[1]), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        line = process.stdout.readline()
        assert line.startswith(f"snakechat serving {MODEL} on http://127.0.0.1:"), line + process.stderr.read()
        base = line.split("API: ")[1].strip(" )\n")
        with openai.OpenAI(base_url=base, api_key="unused", max_retries=0) as c:
            assert [m.id for m in c.models.list()] == [MODEL]
            done = c.chat.completions.create(model=MODEL, messages=[user(QUESTION)], temperature=0)
            assert done.choices[0].message.content == tool_text.render(ANSWER)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()


# --- the page in a real browser -------------------------------------------------------------------


def test_browser_chat_streams_replies_and_tool_calls(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{server.port}/")
            assert page.title() == "snakechat"
            # record the reply's length at every change, to see it grow while it streams (each
            # mutation record on its own: a fast server's pieces can all arrive in one read)
            page.evaluate(
                """() => { window.lengths = [];
                new MutationObserver((records) => { for (const r of records) {
                  const bubble = r.target.nodeType === 3 ? r.target.parentElement : r.target.closest('.assistant');
                  if (bubble && bubble.classList.contains('assistant')) window.lengths.push(bubble.textContent.length); } })
                .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); }"""
            )
            page.fill("#input", QUESTION)
            page.press("#input", "Enter")
            page.wait_for_selector(".message.assistant[data-done='true']", timeout=60_000)
            assert page.inner_text(".message.user") == QUESTION
            reply = page.locator(".message.assistant").first
            assert int(reply.get_attribute("data-chunks")) > 3
            lengths = [n for n in page.evaluate("window.lengths") if n > 0]
            assert len(set(lengths)) > 2 and lengths == sorted(lengths)  # grew piece by piece
            tool = reply.locator(".tool-call")
            assert tool.count() == 1
            assert tool.locator(".expression").inner_text() == "6*7" and tool.locator(".result").inner_text() == "42"
            assert reply.inner_text().startswith("it is ") and reply.inner_text().endswith(". so 42")

            prompt1 = server.prompts[-1]
            page.fill("#input", "and then?")  # a second turn: the tool call goes back as the model wrote it
            page.click("#send")
            page.wait_for_function("document.querySelectorAll(\".assistant[data-done='true']\").length == 2", timeout=60_000)
            assert page.evaluate("() => conversation[1]") == {"role": "assistant", "content": tool_text.render(ANSWER), "content_parts": ANSWER}
            answer_ids, _ = render_conversation(server.tokenizer, [user(QUESTION), {"role": "assistant", "content": ANSWER}])
            assert server.prompts[-1][: len(answer_ids)] == answer_ids and server.prompts[-1][: len(prompt1)] == prompt1

            page.fill("#input", "y" * 300)  # over the server's limit: the error is shown, not a reply
            page.press("#input", "Enter")
            page.wait_for_selector(".message.error", timeout=30_000)
            assert "limit is 200" in page.inner_text(".message.error")

            page.click("#new-chat")
            assert page.locator(".message").count() == 0
        finally:
            context.close()


# --- the terminal chat ------------------------------------------------------------------------------


def test_chat_cli_one_prompt_and_interactive(checkpoint, engine, monkeypatch, capsys):
    """The terminal chat: -p answers once (as a real command); the loop takes turns, shows the
    calculator call, keeps it as parts for the next turn, and takes /new and /quit."""
    from snakechat import chat_cli

    flags = ["--max-tokens", "40", "--temperature", "0"]
    one = subprocess.run([sys.executable, "-m", "snakechat.chat_cli", *flags, "--checkpoint", str(checkpoint), "-p", QUESTION],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert one.returncode == 0, one.stderr
    assert one.stdout == "it is [calculator: 6*7 = 42]. so 42\n"

    prompts = []
    real_reply = chat_cli.reply

    def recording_reply(engine_, tok, messages, *args, **kwargs):
        prompts.append(render_for_completion(tok, messages))
        return real_reply(engine_, tok, messages, *args, **kwargs)

    monkeypatch.setattr(chat_cli, "reply", recording_reply)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\nand then?\n/new\nhi again\n/quit\n"))
    chat_cli.main([*flags, "--model", "tiny", "--stage", "sft", "--results", str(checkpoint.parents[1])])
    out = capsys.readouterr().out
    assert out.count("snakechat> ") == 3 and "(new conversation)" in out
    assert "snakechat> it is [calculator: 6*7 = 42]. so 42\n" in out
    _, tok = engine
    answer_ids, _ = render_conversation(tok, [user(QUESTION), {"role": "assistant", "content": ANSWER}])
    assert prompts[1][: len(answer_ids)] == answer_ids  # turn 2 saw turn 1's tool tokens
    assert prompts[2] == render_for_completion(tok, [user("hi again")])
    with pytest.raises(SystemExit) as exit_info:
        chat_cli.main(["--model", "nope", "--results", str(checkpoint.parents[1])])
    assert exit_info.value.code == 2 and "no checkpoint at" in capsys.readouterr().err
