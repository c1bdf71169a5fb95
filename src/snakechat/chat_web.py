"""Serve a checkpoint through an OpenAI-compatible Chat Completions API and a chat page (127.0.0.1 by default).

    python -m snakechat.chat_web --checkpoint results/sft/tiny --port 8000
    python -m snakechat.chat_web --model d20 --stage sft --host 0.0.0.0 --max-concurrent 4

Any OpenAI client works:

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="snakechat-tiny-sft", messages=[{"role": "user", "content": "Hi"}])

Endpoints (one API; the page uses it too):
- `GET /`: the chat page (chat_web.html);
- `GET /v1/models`, `GET /v1/models/{id}`: the one model served, named `snakechat-<name>-<stage>`
  after the checkpoint directory `<results>/<stage>/<name>` (or --served-model-name);
- `POST /v1/chat/completions`: `model`, `messages` (roles system/developer, user, assistant),
  `stream` (+ `stream_options.include_usage`), `max_completion_tokens` or `max_tokens`,
  `temperature` (0 = greedy), `top_p` (nucleus) and, beyond OpenAI's parameters, `top_k` (0 = off;
  the server's --top-k when absent), `seed`, `stop` (a string or up to 4). The reply has `usage`
  (prompt and completion tokens; tool calls and outputs count, the end token does not) and
  `finish_reason` "stop" or "length". Refused with an OpenAI-shaped error
  `{"error": {"message", "type", "param", "code"}}`: `n` other than 1, client-side `tools`,
  `logprobs`, non-text `response_format`, penalties, unknown roles (400); an unknown model (404);
  a body over the size limit (413) or arriving slower than --body-timeout (408); when
  --max-concurrent replies are being generated, 503 with Retry-After.

A system (or developer) message is rendered as the training data renders it
(snakechat.conversation: the model has no system slot, so it is put before the first user
message, separated by a blank line).

Calculator calls. The model's reply can contain calls it writes (<|python_start|> 6*7
<|python_end|>) and the answers the engine forces (<|output_start|> 42 <|output_end|>). They
travel as content parts, the format the training data uses: `message.content` is a string when
the reply is text only, and otherwise a list of parts `{"type": "text" | "python" |
"python_output", "text": ...}` in the order written. Streamed, a text piece is a string
`delta.content` and a tool part arrives whole as a one-part list. Sent back as an assistant
message's `content` (as the OpenAI client does when given the message it returned), the parts
render into exactly the special tokens the model produced (the openai Python client types
`message.content` as a string, so it warns when it serializes the list back, and sends it
unchanged). OpenAI's own `tool_calls`/`tool`
messages are for tools the client runs; this tool runs in the server, so they are refused.
User and system text is only ever encoded as text: typed "<|python_start|>" is not the token.

Served by uvicorn (h11) in one process; the model is loaded once and replies are generated in
worker threads, off the event loop. Protocol errors (bad or conflicting Content-Length, bad
chunking) get 400 from h11 and the connection is closed; a body sent to an unknown path is read
and dropped, so the connection's next request parses correctly. --max-connections open
connections at most (uvicorn answers 503 beyond), idle keep-alive connections close after 5 s.

bench/serve.py compares the server with the engine called directly (its docstring has the
figures): on the shared 2-core machine a 1-token request costs about 4 ms more through the
server, and requests/s through it were 0.7-1.2x direct for 1, 2 and 8 clients (64 new tokens,
tiny-sized model, noisy machine).
"""

import argparse
import asyncio
import json
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from snakechat.chat_model import add_checkpoint_args, at_least, checkpoint_dir, load_engine
from snakechat.conversation import render_for_completion
from snakechat.reply import Reply

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
PART_TYPES = {"system": ("text",), "user": ("text",), "assistant": ("text", "python", "python_output")}
# parameters the server cannot honour: refused unless absent or at their no-op value
UNSUPPORTED = {
    "tools": lambda v: not v,
    "tool_choice": lambda v: v == "none",
    "functions": lambda v: not v,
    "function_call": lambda v: v == "none",
    "logprobs": lambda v: v is False,
    "top_logprobs": lambda v: v == 0,
    "logit_bias": lambda v: not v,
    "presence_penalty": lambda v: v == 0,
    "frequency_penalty": lambda v: v == 0,
    "response_format": lambda v: isinstance(v, dict) and v.get("type") == "text",
    "modalities": lambda v: v == ["text"],
    "audio": lambda v: not v,
    "prediction": lambda v: not v,
}


# uvicorn counts the connection asking, so one connection would refuse everything
MINIMUM = {"max_connections": 2, "body_timeout": 0.001}


@dataclass(frozen=True)
class Limits:
    """What one request and the server as a whole may use, checked on creation (see MINIMUM; else 1)."""

    max_message_chars: int = 2000
    max_turns: int = 20
    max_tokens: int = 512
    max_concurrent: int = 2
    max_connections: int = 64
    body_timeout: float = 10.0

    def __post_init__(self):
        for name, value in vars(self).items():
            low = MINIMUM.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise ValueError(f"{name} must be >= {low}, got {value!r}")

    @property
    def max_body_bytes(self):
        return 4 * self.max_message_chars * 2 * self.max_turns + 4096  # UTF-8 and JSON overhead


@dataclass(frozen=True)
class Sampling:
    """Defaults for requests that do not say: temperature, top_k (None: off), and the seeds drawn."""

    temperature: float = 0.6
    top_k: int | None = 50
    seed: int = 0


class APIError(Exception):
    """A request refused: HTTP status and an OpenAI-shaped error body."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.param, self.code, self.kind, self.headers = status, param, code, kind, headers

    def response(self):
        body = {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, self.status, headers=self.headers)


def _number(body, key, kind, low, high, default, low_open=False):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise APIError(400, f"{key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r:.50}", param=key)
    if not (low < value if low_open else low <= value) or value > high:
        raise APIError(400, f"{key!r} must be {'>' if low_open else '>='} {low} and <= {high}, got {value}", param=key)
    return value


def _content(message, i, role):
    """A message's content as a string or a list of parts, checked against what `role` may send."""
    where = f"messages[{i}].content"
    content = message.get("content")
    if content is None and role == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a string or a list of content parts", param=where)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES[role] or not isinstance(part.get("text"), str):
            allowed = " or ".join(repr(t) for t in PART_TYPES[role])
            raise APIError(400, f"{where}[{j}]: a {role} content part must be {{'type': {allowed}, 'text': string}}, got type {kind!r:.50}", param=f"{where}[{j}]")
        parts.append({"type": kind, "text": part["text"]})
    return parts


def _messages(body, limits):
    """The request's messages in snakechat.conversation's format, or APIError naming the bad one."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise APIError(400, f"messages[{i}] must be an object with 'role' and 'content'", param=f"messages[{i}]")
        role = ROLES.get(message.get("role"))
        if role is None:
            raise APIError(400, f"messages[{i}]: unknown role {message.get('role')!r:.50}; this server takes system, developer, user and assistant messages (its calculator calls travel as assistant content parts)", param=f"messages[{i}].role")
        for key in ("tool_calls", "function_call"):
            if message.get(key):
                raise APIError(400, f"messages[{i}]: '{key}' is not supported (the calculator's calls are content parts)", param=f"messages[{i}].{key}")
        content = _content(message, i, role)
        chars = len(content) if isinstance(content, str) else sum(len(p["text"]) for p in content)
        if chars > limits.max_message_chars:
            raise APIError(400, f"messages[{i}] has {chars} characters; the limit is {limits.max_message_chars}", param=f"messages[{i}].content")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise APIError(400, "the last message must be from the user", param="messages")
    turns = sum(m["role"] == "user" for m in out)
    if turns > limits.max_turns:
        raise APIError(400, f"the conversation has {turns} user turns; the limit is {limits.max_turns} (start a new chat)", param="messages")
    return out


def _stop(body):
    stop = body.get("stop")
    if stop is None:
        return []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not 1 <= len(stop) <= 4 or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, "'stop' must be a non-empty string or a list of 1 to 4 of them", param="stop")
    return stop


@dataclass
class ChatRequest:
    prompt: list
    settings: dict
    stream: bool
    include_usage: bool


class ChatServer:
    """The model, its tokenizer and limits, and the replies being generated (counted on the event loop)."""

    def __init__(self, engine, tokenizer, model_name, limits=Limits(), sampling=Sampling(), created=None):
        self.engine, self.tokenizer, self.model_name, self.limits, self.sampling = engine, tokenizer, model_name, limits, sampling
        self.created = int(created if created is not None else time.time())
        self.seeds = random.Random(sampling.seed)
        self.active = 0
        self.workers = ThreadPoolExecutor(limits.max_concurrent, thread_name_prefix="generate", initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
        self.page = resources.files("snakechat").joinpath("chat_web.html").read_bytes()

    def parse(self, body):
        """A ChatRequest from a decoded JSON body, or APIError saying what is wrong."""
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str):
            raise APIError(400, f"'model' is required: the name of the served model ({self.model_name!r})", param="model")
        if model != self.model_name:
            raise APIError(404, f"the model {model!r:.100} does not exist; this server has {self.model_name!r}", param="model", code="model_not_found")
        if body.get("n") not in (None, 1):
            raise APIError(400, f"'n' must be 1 (one reply per request), got {body['n']!r:.50}", param="n")
        for key, harmless in UNSUPPORTED.items():
            if body.get(key) is not None and not harmless(body[key]):
                raise APIError(400, f"{key!r} is not supported by this server", param=key)
        stream = body.get("stream")
        if stream not in (None, True, False):
            raise APIError(400, "'stream' must be true or false", param="stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict) or options.get("include_usage") not in (None, True, False):
            raise APIError(400, "'stream_options' must be {'include_usage': true or false}", param="stream_options")
        limit = self.limits.max_tokens
        max_tokens = _number(body, "max_completion_tokens", int, 1, limit, None)
        if max_tokens is None:
            max_tokens = _number(body, "max_tokens", int, 1, limit, limit)
        top_k = _number(body, "top_k", int, 0, 1 << 31, self.sampling.top_k or 0)
        settings = {
            "temperature": _number(body, "temperature", float, 0.0, 2.0, self.sampling.temperature),
            "top_p": _number(body, "top_p", float, 0.0, 1.0, None, low_open=True),
            "top_k": top_k or None,
            "seed": _number(body, "seed", int, 0, 2**63 - 1, None),
            "stop": _stop(body),
        }
        messages = _messages(body, self.limits)
        try:
            prompt = render_for_completion(self.tokenizer, messages)
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from None
        room = self.engine.max_len - len(prompt)
        if room < 1:
            raise APIError(400, f"the conversation is {len(prompt)} tokens long; the model handles {self.engine.max_len} (start a new chat)", param="messages", code="context_length_exceeded")
        settings["max_tokens"] = min(max_tokens, room)
        return ChatRequest(prompt, settings, bool(stream), bool(options.get("include_usage")))

    def start(self, request):
        """Begin generating in a worker thread: a Generation, or 503 when every slot is busy."""
        if self.active >= self.limits.max_concurrent:
            raise APIError(503, f"busy: {self.limits.max_concurrent} replies are being generated; try again shortly", kind="server_error", code="overloaded", headers={"Retry-After": "1"})
        settings = dict(request.settings)
        if settings["seed"] is None:
            settings["seed"] = self.seeds.randrange(2**31)
        self.active += 1
        try:
            return Generation(self, Reply(self.engine, request.prompt, **settings))
        except BaseException:
            self.active -= 1
            raise


class Generation:
    """One reply generated in a worker thread; its pieces reach the event loop through a queue.

    The slot is given back when the thread is done, not when the client leaves: a reply being
    cancelled still counts until its current step ends."""

    END = object()

    def __init__(self, server, reply):
        self.server, self.reply = server, reply
        self.loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()
        self.cancelled = threading.Event()
        server.workers.submit(self._run)

    def _run(self):
        outcome = self.END
        try:
            for piece in self.reply:
                if self.cancelled.is_set():
                    break
                self.loop.call_soon_threadsafe(self.queue.put_nowait, piece)
        except Exception as e:  # reported to the client, not lost in the thread
            outcome = e
        finally:
            self.reply.close()
            try:
                self.loop.call_soon_threadsafe(self._finish, outcome)
            except RuntimeError:  # the event loop has closed (server shut down)
                pass

    def _finish(self, outcome):
        self.server.active -= 1
        self.queue.put_nowait(outcome)

    def cancel(self):
        self.cancelled.set()

    async def pieces(self):
        while (item := await self.queue.get()) is not self.END:
            if isinstance(item, Exception):
                raise APIError(500, f"generation failed: {item}", kind="server_error") from item
            yield item


def _completion_id():
    return f"chatcmpl-{uuid.uuid4().hex}"


def _content_of(parts):
    """OpenAI `content`: a string for text only, else the list of parts."""
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _usage(request, reply):
    n = len(reply.tokens)
    return {"prompt_tokens": len(request.prompt), "completion_tokens": n, "total_tokens": len(request.prompt) + n}


async def read_body(request, limits):
    """The request's JSON body: 413 over the size limit, 408 if it arrives too slowly, 400 if not JSON."""
    close = {"Connection": "close"}  # the rest of the body is not read: this connection cannot carry another request
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > limits.max_body_bytes:  # h11 has checked it is digits
        raise APIError(413, f"the request body of {declared} bytes is larger than the limit of {limits.max_body_bytes}", headers=close)
    chunks, size = [], 0

    async def read():
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise APIError(413, f"the request body is larger than the limit of {limits.max_body_bytes} bytes", headers=close)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), limits.body_timeout)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {limits.body_timeout:g} s", headers=close) from None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
        reason = "it is nested too deeply" if isinstance(e, RecursionError) else e
        raise APIError(400, f"the request body is not valid JSON: {reason}") from None


def make_app(server: ChatServer):
    """The ASGI application: the page and the OpenAI-compatible API."""

    async def page(request):
        return HTMLResponse(server.page)

    def model_card():
        return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "snakechat"}

    async def models(request):
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request):
        if request.path_params["name"] != server.model_name:
            raise APIError(404, f"the model {request.path_params['name']!r:.100} does not exist; this server has {server.model_name!r}", param="model", code="model_not_found")
        return JSONResponse(model_card())

    async def chat_completions(request: Request):
        chat = server.parse(await read_body(request, server.limits))
        generation = server.start(chat)
        head = {"id": _completion_id(), "created": int(time.time()), "model": server.model_name}
        if chat.stream:
            return StreamingResponse(_events(chat, generation, head), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            async for _ in generation.pieces():
                pass
        finally:
            generation.cancel()
        reply = generation.reply
        message = {"role": "assistant", "content": _content_of(reply.parts)}
        choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": _usage(chat, reply)})

    async def _events(chat, generation, head):
        def event(delta=None, finish_reason=None, **extra):
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
            return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': choices, **extra})}\n\n"

        try:
            yield event({"role": "assistant", "content": ""})
            async for kind, text in generation.pieces():
                yield event({"content": text if kind == "text" else [{"type": kind, "text": text}]})
            yield event({}, generation.reply.finish_reason)
            if chat.include_usage:
                yield event(usage=_usage(chat, generation.reply))
            yield "data: [DONE]\n\n"
        except APIError as e:  # the status line has gone out: the error travels as an event
            yield f"data: {json.dumps({'error': {'message': str(e), 'type': e.kind, 'param': e.param, 'code': e.code}})}\n\n"
        finally:  # also when the client has left and the response task is cancelled
            generation.cancel()

    async def api_error(request, exc):
        return exc.response()

    async def http_error(request, exc):
        hint = "; the API is POST /v1/chat/completions and GET /v1/models" if exc.status_code == 404 else ""
        return APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}{hint}", headers=exc.headers).response()

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={APIError: api_error, HTTPException: http_error})


def listen(host, port):
    """A listening socket, or OSError (address in use, unknown host): bound before the model is loaded."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it the
    # response's body waits for the client's delayed ACK of its headers (40 ms a request)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(server: ChatServer, log_level="warning"):
    """The uvicorn server for `server` (run it with .run(sockets=[listen(host, port)]))."""
    config = uvicorn.Config(
        make_app(server),
        http="h11",
        loop="asyncio",
        lifespan="off",
        ws="none",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=5,
        limit_concurrency=server.limits.max_connections,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    return uvicorn.Server(config)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_args(p)
    d = Limits()
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the chat to the network)")
    p.add_argument("--port", type=at_least(0), default=8000, help="0: any free port")
    p.add_argument("--served-model-name", help="the model's id in the API (default: snakechat-<name>-<stage>)")
    p.add_argument("--max-message-chars", type=at_least(1), default=d.max_message_chars)
    p.add_argument("--max-turns", type=at_least(1), default=d.max_turns)
    p.add_argument("--max-tokens", type=at_least(1), default=d.max_tokens, help="most tokens per reply")
    p.add_argument("--max-concurrent", type=at_least(1), default=d.max_concurrent, help="replies generated at once; more get 503")
    p.add_argument("--max-connections", type=at_least(MINIMUM["max_connections"]), default=d.max_connections, help="open connections; more get 503")
    p.add_argument("--body-timeout", type=at_least(MINIMUM["body_timeout"], float), default=d.body_timeout, help="seconds a request body may take to arrive")
    args = p.parse_args(argv)
    directory = checkpoint_dir(p, args)
    limits = Limits(args.max_message_chars, args.max_turns, args.max_tokens, args.max_concurrent, args.max_connections, args.body_timeout)
    try:
        sock = listen(args.host, args.port)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        p.exit(1, f"chat_web: cannot listen on {args.host}:{args.port}: {reason}\n")
    engine, tok = load_engine(directory, args.device, args.precision)
    name = args.served_model_name or f"snakechat-{directory.resolve().name}-{directory.resolve().parent.name}"
    sampling = Sampling(args.temperature, args.top_k or None, args.seed)
    server = ChatServer(engine, tok, name, limits, sampling, created=(directory / "meta.json").stat().st_mtime)
    host, port = sock.getsockname()[:2]
    print(f"snakechat serving {name} on http://{host}:{port}/ (API: http://{host}:{port}/v1)", flush=True)
    try:
        make_server(server).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        server.workers.shutdown(wait=False, cancel_futures=True)
        sock.close()


if __name__ == "__main__":
    main()
