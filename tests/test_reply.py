"""A reply as parts: text pieces as they decode, calculator calls and outputs whole, stop strings, finish reasons."""

import pytest

from snakechat.model.conversation import render_conversation, render_for_completion
from snakechat.model.engine import Engine
from snakechat.serve.reply import Reply
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from tiny_chat_model import memorize, random_gpt, tokenizer

QUESTION = [{"role": "user", "content": "what is 6*7?"}]
ANSWER = [
    {"type": "text", "text": "it is "},
    {"type": "python", "text": "6*7"},
    {"type": "python_output", "text": "42"},
    {"type": "text", "text": " so 42."},
]


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module")
def calculator_engine(tok):
    ids, _ = render_conversation(tok, QUESTION + [{"role": "assistant", "content": ANSWER}])
    return Engine(memorize(random_gpt(tok.vocab_size, seed=2), ids), tok)


def run(engine, messages, **settings):
    reply = Reply(engine, render_for_completion(engine.tokenizer, messages), **{"max_tokens": 40, "temperature": 0.0, **settings})
    return reply, list(reply)


def test_text_pieces_join_to_the_decoded_reply(tok):
    engine = Engine(random_gpt(tok.vocab_size, seed=0), tok)
    prompt = render_for_completion(tok, [{"role": "user", "content": "hello there"}])
    reply, pieces = run(engine, [{"role": "user", "content": "hello there"}], max_tokens=25, temperature=1.0, seed=4)
    out, _ = engine.generate_batch(prompt, max_tokens=25, temperature=1.0, seed=4)
    assert reply.tokens == out[0][len(prompt):]
    assert "".join(text for _, text in pieces) == tok.decode(reply.tokens)  # no tool tokens in this one
    assert len(pieces) > 1 and reply.finish_reason in ("stop", "length")
    assert reply.finish_reason == "length" or len(reply.tokens) < 25


def test_tool_call_and_output_come_as_parts_that_render_back_exactly(calculator_engine, tok):
    reply, pieces = run(calculator_engine, QUESTION)
    assert reply.parts == ANSWER and reply.finish_reason == "stop"
    assert ("python", "6*7") in pieces and ("python_output", "42") in pieces
    assert pieces.index(("python", "6*7")) + 1 == pieces.index(("python_output", "42"))
    prompt = render_for_completion(tok, QUESTION)
    rendered, _ = render_conversation(tok, QUESTION + [{"role": "assistant", "content": reply.parts}])
    assert rendered == prompt + reply.tokens + [tok.special_id("<|assistant_end|>")]


@pytest.mark.parametrize("max_tokens, last", [(3, {"type": "text", "text": "it is"}), (6, {"type": "python", "text": "6"}), (8, {"type": "python", "text": "6*7"}), (11, {"type": "python_output", "text": "42"})])
def test_length_cut_keeps_the_part_it_was_in(calculator_engine, max_tokens, last):
    reply, _ = run(calculator_engine, QUESTION, max_tokens=max_tokens)
    assert reply.finish_reason == "length" and len(reply.tokens) == max_tokens
    assert reply.parts[-1] == last


@pytest.mark.parametrize(
    "stop, parts",
    [
        ([" is"], [{"type": "text", "text": "it"}]),
        (["t i", "zz"], [{"type": "text", "text": "i"}]),
        ([" so"], ANSWER[:3]),
        (["42."], [*ANSWER[:3], {"type": "text", "text": " so "}]),
        (["6*7"], ANSWER),  # only text is searched, not tool calls
        (["so 43"], ANSWER),  # a prefix held back, then given out when it does not match
    ],
)
def test_stop_strings_end_the_reply_before_them(calculator_engine, stop, parts):
    reply, pieces = run(calculator_engine, QUESTION, stop=stop)
    assert reply.parts == parts
    assert reply.finish_reason == "stop"
    text = "".join(t for kind, t in pieces if kind == "text")
    assert text == "".join(p["text"] for p in parts if p["type"] == "text")


def test_close_stops_generating(calculator_engine):
    reply = Reply(calculator_engine, render_for_completion(calculator_engine.tokenizer, QUESTION), max_tokens=40, temperature=0.0)
    first = next(iter(reply))
    reply.close()
    assert first[0] == "text" and list(reply) == [] and len(reply.tokens) < 5
