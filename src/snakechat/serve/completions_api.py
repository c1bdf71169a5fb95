"""The OpenAI (legacy) Completions wire format, `POST /v1/completions`: a prompt in, its
continuation out, with no chat template. This is how base checkpoints are served (what
lm-evaluation-harness's `local-completions` and many other tools call); any checkpoint can be.

A request: `model`, `prompt` (a string, a list of strings, a list of token ids, or a list of such
lists; one prompt when streamed), `max_tokens` (16 when absent, as OpenAI's), `temperature`,
`top_p`, `top_k`, `seed`, `stop`, `stream` (+ `stream_options.include_usage`). A text prompt is
encoded after <|bos|>, as the base model saw every document in training; token ids are taken as
they are. The continuation ends at <|bos|> or <|assistant_end|> ("stop"), at a stop string, or at
`max_tokens` ("length"); a calculator call in it is written as in chat replies
(snakechat.serve.tool_text). `echo`, `logprobs`, `suffix`, `best_of` > 1 and `n` > 1 are refused.
"""

import json
import time
import uuid
from dataclasses import dataclass

from snakechat.serve.chat_api import UNSUPPORTED, APIError, ChatRequest, check_envelope, number, sampling_settings

REFUSED = {
    "echo": lambda v: v is False,
    "logprobs": lambda v: False,  # absent (None) is the only harmless value
    "suffix": lambda v: not v,
    "best_of": lambda v: v == 1,
    **{k: UNSUPPORTED[k] for k in ("logit_bias", "presence_penalty", "frequency_penalty")},
}
DEFAULT_MAX_TOKENS = 16


@dataclass
class CompletionRequest:
    """A request as checked: one ChatRequest per prompt (its ids and the Reply's settings)."""

    prompts: list
    stream: bool
    include_usage: bool


def _is_ids(value):
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _prompts(body, tokenizer):
    """The prompt(s) as lists of token ids, or APIError saying what the prompt must be."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) or _is_ids(prompt):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt or not all(isinstance(p, str) or _is_ids(p) for p in prompt):
        raise APIError(400, "'prompt' must be a string, a non-empty list of token ids, or a non-empty list of either", param="prompt")
    out, vocab_size = [], tokenizer.vocab_size
    for i, p in enumerate(prompt):
        if isinstance(p, str):
            out.append(tokenizer.encode(p, prepend=tokenizer.bos_id))
        elif not all(0 <= t < vocab_size for t in p):
            raise APIError(400, f"prompt {i} has a token id outside 0..{vocab_size - 1}", param="prompt")
        else:
            out.append(list(p))
    return out


def parse_completion(body, model_name, limits, sampling, tokenizer, max_len):
    """A CompletionRequest from a decoded JSON body, or APIError saying what is wrong (as
    snakechat.serve.chat_api.parse_request does for chat)."""
    stream, include_usage = check_envelope(body, model_name, REFUSED, one="one completion per prompt")
    max_tokens = number(body, "max_tokens", int, 1, limits.max_tokens, min(DEFAULT_MAX_TOKENS, limits.max_tokens))
    settings = sampling_settings(body, sampling)
    prompts = _prompts(body, tokenizer)
    if stream and len(prompts) > 1:
        raise APIError(400, f"a streamed request takes one prompt, got {len(prompts)}", param="prompt")
    requests = []
    for i, ids in enumerate(prompts):
        room = max_len - len(ids)
        if room < 1:
            raise APIError(400, f"prompt {i} is {len(ids)} tokens long; the model handles {max_len}", param="prompt", code="context_length_exceeded")
        requests.append(ChatRequest(ids, {**settings, "max_tokens": min(max_tokens, room)}, stream, include_usage))
    return CompletionRequest(requests, stream, include_usage)


def completion_head(model_name):
    return {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}


def usage(pairs):
    """Usage over (request, reply) pairs."""
    prompt = sum(len(r.prompt) for r, _ in pairs)
    completion = sum(len(reply.tokens) for _, reply in pairs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def choice(index, text, finish_reason=None):
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def text_completion(head, choices, pairs):
    """The `text_completion` object of finished completions."""
    return {**head, "object": "text_completion", "choices": choices, "usage": usage(pairs)}


def chunk_event(head, choices, **extra):
    """One server-sent event of a streamed completion."""
    return f"data: {json.dumps({**head, 'object': 'text_completion', 'choices': choices, **extra})}\n\n"
