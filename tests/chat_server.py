"""What the serving tests share: a tiny checkpoint that answers one question with a calculator
call, the real server on a free port of 127.0.0.1, and raw HTTP over sockets."""

import contextlib
import json
import socket
import threading
import time

from snakechat.chat_web import listen, make_server
from snakechat.model.checkpoint import save_checkpoint
from snakechat.model.conversation import render_conversation, render_for_completion
from snakechat.serve.access import Access
from snakechat.serve.chat_api import Limits, Sampling
from snakechat.serve.chat_app import ChatServer
from snakechat.serve.reply import Reply
from tiny_chat_model import memorize, random_gpt, tokenizer

LIMITS = Limits(max_message_chars=200, max_turns=3, max_tokens=40, max_concurrent=1, max_connections=16, body_timeout=1.0)
MODEL = "snakechat-tiny-sft"
QUESTION = "what is 6*7?"
# the reply the model learns for QUESTION: it uses the calculator
ANSWER = [
    {"type": "text", "text": "it is "},
    {"type": "python", "text": "6*7"},
    {"type": "python_output", "text": "42"},
    {"type": "text", "text": ". so 42"},
]
SPECIALS = ("<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>")


def user(text):
    return {"role": "user", "content": text}


def make_checkpoint(root, stage="sft"):
    """A tiny GPT trained to answer QUESTION with ANSWER (calculator call included), saved as <root>/results/<stage>/tiny."""
    tok = tokenizer()
    tok.save(root / "tok")
    ids, _ = render_conversation(tok, [user(QUESTION), {"role": "assistant", "content": ANSWER}])
    model = memorize(random_gpt(tok.vocab_size, seed=2), ids)
    directory = root / "results" / stage / "tiny"
    save_checkpoint(directory, model, {"model_config": model.config.to_dict(), "tokenizer": str(root / "tok"), "step": 0})
    return directory


@contextlib.contextmanager
def serving(engine, limits=LIMITS, sampling=Sampling(temperature=0.0, top_k=None, seed=1), access=None, log_level="error", name=MODEL):
    """A ChatServer served by uvicorn in a thread on a free port; its `.port` and `.prompts` (each
    request's prompt ids, as the server rendered them) added for the tests."""
    chat = ChatServer(*engine, name, limits, sampling, access=access or Access.for_host("127.0.0.1"))
    chat.prompts = []
    parse = chat.parse

    def recording_parse(body):
        request = parse(body)
        chat.prompts.append(request.prompt)
        return request

    chat.parse = recording_parse
    sock = listen("127.0.0.1", 0)
    server = make_server(chat, log_level=log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    chat.port = sock.getsockname()[1]
    try:
        yield chat
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        chat.workers.shutdown()
        sock.close()


def direct(engine, messages, **settings):
    """The reply the engine gives without the server: (prompt ids, Reply run to its end)."""
    model, tok = engine
    prompt = render_for_completion(tok, messages)
    reply = Reply(model, prompt, **{"max_tokens": LIMITS.max_tokens, "temperature": 0.0, **settings})
    list(reply)
    return prompt, reply



def exchange(port, data, timeout=10.0):
    """Send `data` on one connection and read until the server closes it (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        with contextlib.suppress(TimeoutError):
            while chunk := s.recv(65536):
                out += chunk
    return out


def responses(raw):
    """(status, headers, body) of each HTTP response in `raw` (Content-Length framed)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", len(rest)))
        out.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


def post(port, body, path="/v1/chat/completions", headers=()):
    """A POST of `body` (JSON unless bytes); `headers` are added, or replace the Host and Content-Type given by default."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    given = {"Host": "127.0.0.1", "Content-Type": "application/json"}
    given.update(headers)
    extra = "".join(f"{k}: {v}\r\n" for k, v in given.items())
    return f"POST {path} HTTP/1.1\r\nContent-Length: {len(data)}\r\n{extra}".encode() + b"\r\n" + data


GET_MODELS = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
