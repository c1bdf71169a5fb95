"""The OpenAI Chat Completions wire format as snakechat.chat_web speaks it: what a request may say
(checked into a ChatRequest, or refused with an APIError carrying OpenAI's error body) and the shapes
of what is sent back (a completion, stream chunks, the model card). No HTTP here: the app
(snakechat.serve.chat_app) reads bodies and sends responses; the protocol itself is described in
snakechat.chat_web's docstring."""

import json
import time
import uuid
from dataclasses import dataclass

from snakechat.model.conversation import render_for_completion
from snakechat.serve import tool_text

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


MINIMUM = {"body_timeout": 0.001}


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

    def body(self):
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def unknown_model(asked, served):
    return APIError(404, f"the model {asked!r:.100} does not exist; this server has {served!r}", param="model", code="model_not_found")


def number(body, key, kind, low, high, default, low_open=False):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise APIError(400, f"{key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r:.50}", param=key)
    if not (low < value if low_open else low <= value) or value > high:
        raise APIError(400, f"{key!r} must be {'>' if low_open else '>='} {low} and <= {high}, got {value}", param=key)
    return value


def _parts(value, where, role):
    """A list of content parts checked against what `role` may send, or APIError naming the bad one."""
    parts = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES[role] or not isinstance(part.get("text"), str):
            allowed = " or ".join(repr(t) for t in PART_TYPES[role])
            raise APIError(400, f"{where}[{j}]: a {role} content part must be {{'type': {allowed}, 'text': string}}, got type {kind!r:.50}", param=f"{where}[{j}]")
        parts.append({"type": kind, "text": part["text"]})
    return parts


def _content(message, i, role):
    """A message's content as a string or a list of parts, checked against what `role` may send.
    An assistant's string is read for calculator calls (snakechat.serve.tool_text), or replaced by
    its `content_parts` when they render to it."""
    where = f"messages[{i}].content"
    content = message.get("content")
    if content is None and role == "assistant":
        return ""
    if isinstance(content, list):
        return _parts(content, where, role)
    if not isinstance(content, str):
        raise APIError(400, f"{where} must be a string or a list of content parts", param=where)
    if role != "assistant":
        return content
    given = message.get("content_parts")
    if given is not None:
        if not isinstance(given, list):
            raise APIError(400, f"messages[{i}].content_parts must be a list of content parts", param=f"messages[{i}].content_parts")
        parts = _parts(given, f"messages[{i}].content_parts", role)
        if tool_text.render(parts) == content:
            return parts
    parts = tool_text.parse(content)
    return parts if tool_text.has_tools(parts) else content


def _messages(body, limits):
    """The request's messages in snakechat.model.conversation's format, or APIError naming the bad one."""
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


def stop_strings(body):
    stop = body.get("stop")
    if stop is None:
        return []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not 1 <= len(stop) <= 4 or not all(isinstance(s, str) and s for s in stop):
        raise APIError(400, "'stop' must be a non-empty string or a list of 1 to 4 of them", param="stop")
    return stop


@dataclass
class ChatRequest:
    """A request as checked: its prompt ids, the Reply's settings, and how the reply goes back."""

    prompt: list
    settings: dict
    stream: bool
    include_usage: bool


def check_envelope(body, model_name, unsupported, one="one reply per request"):
    """The checks a chat and a completions request share: a JSON object naming the served model,
    n of 1 (`one` says what that means), no field of `unsupported` (key -> harmless(value)), and the
    stream flags; returns (stream, include_usage)."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, f"'model' is required: the name of the served model ({model_name!r})", param="model")
    if model != model_name:
        raise unknown_model(model, model_name)
    if body.get("n") not in (None, 1):
        raise APIError(400, f"'n' must be 1 ({one}), got {body['n']!r:.50}", param="n")
    for key, harmless in unsupported.items():
        if body.get(key) is not None and not harmless(body[key]):
            raise APIError(400, f"{key!r} is not supported by this server", param=key)
    stream = body.get("stream")
    if stream not in (None, True, False):
        raise APIError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or options.get("include_usage") not in (None, True, False):
        raise APIError(400, "'stream_options' must be {'include_usage': true or false}", param="stream_options")
    return bool(stream), bool(options.get("include_usage"))


def sampling_settings(body, sampling):
    """temperature, top_p, top_k, seed and stop of a request; `sampling` fills what the body leaves out."""
    return {
        "temperature": number(body, "temperature", float, 0.0, 2.0, sampling.temperature),
        "top_p": number(body, "top_p", float, 0.0, 1.0, None, low_open=True),
        "top_k": number(body, "top_k", int, 0, 1 << 31, sampling.top_k or 0) or None,
        "seed": number(body, "seed", int, 0, 2**63 - 1, None),
        "stop": stop_strings(body),
    }


def parse_request(body, model_name, limits, sampling, tokenizer, max_len):
    """A ChatRequest from a decoded JSON body, or APIError saying what is wrong: checked against the
    served model's name, the limits, and its context of `max_len` tokens; `sampling` fills what the body leaves out."""
    stream, include_usage = check_envelope(body, model_name, UNSUPPORTED)
    limit = limits.max_tokens
    max_tokens = number(body, "max_completion_tokens", int, 1, limit, None)
    if max_tokens is None:
        max_tokens = number(body, "max_tokens", int, 1, limit, limit)
    settings = sampling_settings(body, sampling)
    messages = _messages(body, limits)
    try:
        prompt = render_for_completion(tokenizer, messages)
    except ValueError as e:
        raise APIError(400, str(e), param="messages") from None
    room = max_len - len(prompt)
    if room < 1:
        raise APIError(400, f"the conversation is {len(prompt)} tokens long; the model handles {max_len} (start a new chat)", param="messages", code="context_length_exceeded")
    settings["max_tokens"] = min(max_tokens, room)
    return ChatRequest(prompt, settings, stream, include_usage)


def completion_head(model_name):
    """The fields every completion and chunk of one reply share."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}


def message_of(parts):
    """The assistant message of a reply: `content` a string, calculator calls written in it, and
    the exact parts in `content_parts` when there are calls."""
    message = {"role": "assistant", "content": tool_text.render(parts)}
    if tool_text.has_tools(parts):
        message["content_parts"] = parts
    return message


def usage(request, reply):
    n = len(reply.tokens)
    return {"prompt_tokens": len(request.prompt), "completion_tokens": n, "total_tokens": len(request.prompt) + n}


def completion(head, request, reply):
    """The `chat.completion` object of a finished reply."""
    choice = {"index": 0, "message": message_of(reply.parts), "finish_reason": reply.finish_reason, "logprobs": None}
    return {**head, "object": "chat.completion", "choices": [choice], "usage": usage(request, reply)}


def chunk_event(head, delta=None, finish_reason=None, **extra):
    """One server-sent event of a streamed reply: a `chat.completion.chunk` (no choice when `delta` is None)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': choices, **extra})}\n\n"


def error_event(error):
    """An APIError as a server-sent event (the stream's status line has gone out already)."""
    return f"data: {json.dumps(error.body())}\n\n"


DONE_EVENT = "data: [DONE]\n\n"


def model_card(model_name, created):
    return {"id": model_name, "object": "model", "created": created, "owned_by": "snakechat"}
