"""The ASGI application behind snakechat.chat_web: the model and its generation slots (ChatServer),
one reply generated in a worker thread and handed to the event loop (Generation), request bodies
read within their limits, and the routes of the page and the API. What a request may say and what a
reply looks like is snakechat.serve.chat_api's."""

import asyncio
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from snakechat.serve.chat_api import DONE_EVENT, APIError, Limits, Sampling, chunk_event, completion, completion_head, error_event, model_card, parse_request, unknown_model, usage
from snakechat.serve.access import Access, AccessGuard
from snakechat.serve import completions_api
from snakechat.serve.connections import log_departure
from snakechat.serve.reply import Reply
from snakechat.serve.tool_text import StreamedCalls, render


class ChatServer:
    """The model, its tokenizer and limits, and the replies being generated (counted on the event loop)."""

    def __init__(self, engine, tokenizer, model_name, limits=Limits(), sampling=Sampling(), created=None, access=Access.for_host("127.0.0.1")):
        self.engine, self.tokenizer, self.model_name, self.limits, self.sampling = engine, tokenizer, model_name, limits, sampling
        self.access = access
        self.created = int(created if created is not None else time.time())
        self.seeds = random.Random(sampling.seed)
        self.active = 0
        self.workers = ThreadPoolExecutor(limits.max_concurrent, thread_name_prefix="generate", initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
        self.page = resources.files("snakechat.serve").joinpath("chat_web.html").read_bytes()

    def parse(self, body):
        """A ChatRequest from a decoded JSON body, or APIError saying what is wrong."""
        return parse_request(body, self.model_name, self.limits, self.sampling, self.tokenizer, self.engine.max_len)

    def parse_completion(self, body):
        """A CompletionRequest from a decoded JSON body, or APIError saying what is wrong."""
        return completions_api.parse_completion(body, self.model_name, self.limits, self.sampling, self.tokenizer, self.engine.max_len)

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


def delta(text, parts):
    """A streamed piece: its text, and for a calculator call the parts its `<<...>>` text stands for."""
    return {"content": text} if parts is None else {"content": text, "content_parts": parts}


def error_response(error):
    """An APIError as the HTTP response OpenAI's clients expect."""
    return JSONResponse(error.body(), error.status, headers=error.headers)


async def read_body(request, limits):
    """The request's JSON body: 415 unless declared as JSON, 413 over the size limit, 408 if it
    arrives too slowly, 400 if not JSON."""
    close = {"Connection": "close"}  # the rest of the body is not read: this connection cannot carry another request
    kind = request.headers.get("content-type", "")
    if kind.partition(";")[0].strip().lower() != "application/json":
        raise APIError(415, f"the request body must be sent as Content-Type: application/json, not {kind!r:.100}", headers=close)
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


async def generated_unless_client_leaves(request, generation):
    """Wait for a non-streamed reply; if its client disconnects first, stop generating (the slot is
    given back at the next token) and raise ClientDisconnect (logged as one line by
    snakechat.serve.connections)."""

    async def drain():
        async for _ in generation.pieces():
            pass

    async def disconnect():  # the body has been read: the next message is the disconnect
        while (await request.receive())["type"] != "http.disconnect":
            pass

    reply, left = asyncio.ensure_future(drain()), asyncio.ensure_future(disconnect())
    try:
        await asyncio.wait({reply, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        generation.cancel()
        left.cancel()
    if not reply.done():
        reply.cancel()
        raise ClientDisconnect()
    reply.result()  # its APIError, if generation failed


def streamed(request, generation, events):
    """The server-sent-events response of a generation: `events`, then [DONE]; an error once the
    stream has begun travels as an event; a client that leaves stops the generation and is logged."""

    async def stream():
        finished = False
        try:
            async for event in events:
                yield event
            yield DONE_EVENT
            finished = True
        except APIError as e:  # the status line has gone out: the error travels as an event
            yield error_event(e)
            finished = True
        finally:  # also when the client has left and the response task is cancelled
            generation.cancel()
            if not finished:
                log_departure(request.scope, " (streaming)")

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def make_app(server: ChatServer):
    """The ASGI application: the page and the OpenAI-compatible API."""

    async def page(request):
        return HTMLResponse(server.page)

    async def models(request):
        return JSONResponse({"object": "list", "data": [model_card(server.model_name, server.created)]})

    async def model(request):
        if request.path_params["name"] != server.model_name:
            raise unknown_model(request.path_params["name"], server.model_name)
        return JSONResponse(model_card(server.model_name, server.created))

    async def chat_completions(request: Request):
        chat = server.parse(await read_body(request, server.limits))
        generation = server.start(chat)
        head = completion_head(server.model_name)
        if chat.stream:
            return streamed(request, generation, _events(chat, generation, head))
        await generated_unless_client_leaves(request, generation)
        return JSONResponse(completion(head, chat, generation.reply))

    async def _events(chat, generation, head):
        yield chunk_event(head, {"role": "assistant", "content": ""})
        calls = StreamedCalls()
        async for piece in generation.pieces():
            for text, parts in calls.feed(*piece):
                yield chunk_event(head, delta(text, parts))
        for text, parts in calls.flush():
            yield chunk_event(head, delta(text, parts))
        yield chunk_event(head, {}, generation.reply.finish_reason)
        if chat.include_usage:
            yield chunk_event(head, usage=usage(chat, generation.reply))

    async def completions(request: Request):
        job = server.parse_completion(await read_body(request, server.limits))
        head = completions_api.completion_head(server.model_name)
        if job.stream:
            generation = server.start(job.prompts[0])
            return streamed(request, generation, _completion_events(job, generation, head))
        pairs, choices = [], []
        for i, one in enumerate(job.prompts):  # one after another, each in a generation slot
            generation = server.start(one)
            await generated_unless_client_leaves(request, generation)
            reply = generation.reply
            pairs.append((one, reply))
            choices.append(completions_api.choice(i, render(reply.parts), reply.finish_reason))
        return JSONResponse(completions_api.text_completion(head, choices, pairs))

    async def _completion_events(job, generation, head):
        event, choice = completions_api.chunk_event, completions_api.choice
        calls = StreamedCalls()
        async for piece in generation.pieces():
            for text, _ in calls.feed(*piece):
                yield event(head, [choice(0, text)])
        for text, _ in calls.flush():
            yield event(head, [choice(0, text)])
        yield event(head, [choice(0, "", generation.reply.finish_reason)])
        if job.include_usage:
            yield event(head, [], usage=completions_api.usage([(job.prompts[0], generation.reply)]))

    async def api_error(request, exc):
        return error_response(exc)

    async def http_error(request, exc):
        hint = "; the API is POST /v1/chat/completions, POST /v1/completions and GET /v1/models" if exc.status_code == 404 else ""
        return error_response(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}{hint}", headers=exc.headers))

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    middleware = [Middleware(AccessGuard, access=server.access)]
    if server.access.origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(server.access.origins), allow_methods=["GET", "POST"], allow_headers=["*"], max_age=600))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={APIError: api_error, HTTPException: http_error})
