"""Serve a checkpoint through an OpenAI-compatible API (Chat Completions and Completions) and a chat page (127.0.0.1 by default).

    python -m snakechat.chat_web --checkpoint results/sft/tiny --port 8000
    python -m snakechat.chat_web --model d20 --stage base --host 0.0.0.0 --max-concurrent 4

Any OpenAI client works:

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="snakechat-tiny-sft", messages=[{"role": "user", "content": "Hi"}])
    client.completions.create(model="snakechat-tiny-base", prompt="The capital of France is")

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
  a body over the size limit (413), arriving slower than --body-timeout (408), or not sent as
  `application/json` (415); when --max-concurrent replies are being generated, 503 with Retry-After.
  Any checkpoint is served (every tokenizer has the chat tokens); a base model has not learnt to answer.
- `POST /v1/completions`: a prompt in, its continuation out, no chat template: how base
  checkpoints are used (lm-evaluation-harness's `local-completions`);
  snakechat.serve.completions_api has what it takes.

A system (or developer) message is rendered as the training data renders it
(snakechat.model.conversation: the model has no system slot, so it is put before the first user
message, separated by a blank line).

Calculator calls. The model's reply can contain calls it writes (<|python_start|> 6*7
<|python_end|>) and the answers the engine forces (<|output_start|> 42 <|output_end|>).
`message.content` is always a string (as OpenAI's clients type it): each call is written in it
as GSM8K annotates one, `<<6*7=42>>`, and a reply with calls also carries its exact parts
(`{"type": "text" | "python" | "python_output", "text": ...}`, the training data's format) in an
extra field, `content_parts`. Streamed, every `delta.content` is a string; a call arrives whole,
its delta carrying its `content_parts`. An assistant message sent back (the message object as
returned, or just its content) renders into exactly the special tokens the model produced: its
`content_parts` are used when they render to its `content`, else the `<<...>>` in the content
are read as calls (snakechat.serve.tool_text says where the string alone is ambiguous). A list of
parts is accepted as `content` too. OpenAI's own `tool_calls`/`tool` messages are for tools the
client runs; this tool runs in the server, so they are refused. User and system text is only
ever encoded as text: typed "<|python_start|>" is not the token.

Who may call it (snakechat.serve.access): the Host header must name the bound address (DNS
rebinding), --allowed-hosts adds names; a browser request from another origin is refused (403)
unless --allowed-origins lists it, and those get CORS headers and preflight answers. Bodies must
be `application/json`, which a page cannot send to another site without a preflight.

Served by uvicorn (h11) in one process; the model is loaded once and replies are generated in
worker threads, off the event loop. Protocol errors (bad or conflicting Content-Length, bad
chunking) get 400 from h11 and the connection is closed, as does a request with both
Content-Length and Transfer-Encoding; a body sent to an unknown path is read and dropped, so the
connection's next request parses correctly. --max-connections requests in progress at once: more
get 503 in the error shape above with Retry-After; connections without a request in progress do
not count, and beyond --max-connections open ones a new connection closes the one idle longest.
Idle keep-alive connections close after 5 s, and a connection whose request line and headers take
longer than --body-timeout to arrive is closed (snakechat.serve.connections). A client that goes
away stops its reply at the next token, streamed or not, and is logged as one line.

bench/serve.py compares the server with the engine called directly (its docstring has the
figures): on the shared 2-core machine a 1-token request costs about 4 ms more through the
server, and requests/s through it were 0.7-1.2x direct for 1, 2 and 8 clients (64 new tokens,
tiny-sized model, noisy machine).
"""

import argparse
import os
import socket

import uvicorn

from snakechat.serve.chat_api import MINIMUM, Limits, Sampling
from snakechat.serve.chat_app import ChatServer, make_app
from snakechat.serve.access import Access
from snakechat.serve.connections import protocol_class
from snakechat.serve.chat_model import add_checkpoint_args, at_least, checkpoint_dir, load_engine


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
        http=protocol_class(server.limits.body_timeout, server.limits.max_connections),
        loop="asyncio",
        lifespan="off",
        ws="none",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    return uvicorn.Server(config)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_args(p)
    d = Limits()
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the chat to the network)")
    p.add_argument("--port", type=at_least(0, int, 65535), default=8000, help="0: any free port")
    p.add_argument("--allowed-hosts", default="", help="comma-separated names the Host header may give besides the bound address ('*': any)")
    p.add_argument("--allowed-origins", default="", help="comma-separated origins (e.g. http://localhost:3000) whose pages may call the API ('*': any); others are refused")
    p.add_argument("--served-model-name", help="the model's id in the API (default: snakechat-<name>-<stage>)")
    p.add_argument("--max-message-chars", type=at_least(1), default=d.max_message_chars)
    p.add_argument("--max-turns", type=at_least(1), default=d.max_turns)
    p.add_argument("--max-tokens", type=at_least(1), default=d.max_tokens, help="most tokens per reply")
    p.add_argument("--max-concurrent", type=at_least(1), default=d.max_concurrent, help="replies generated at once; more get 503")
    p.add_argument("--max-connections", type=at_least(1), default=d.max_connections, help="requests in progress at once (idle connections do not count); more get 503")
    p.add_argument("--body-timeout", type=at_least(MINIMUM["body_timeout"], float), default=d.body_timeout, help="seconds a request's headers, and then its body, may each take to arrive")
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
    access = Access.for_host(args.host, args.allowed_hosts.split(","), args.allowed_origins.split(","))
    server = ChatServer(engine, tok, name, limits, sampling, created=(directory / "meta.json").stat().st_mtime, access=access)
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
