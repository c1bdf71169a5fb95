"""Calculator calls written inside a reply's string content (<<expression=answer>>) and read back."""

import pytest

from snakechat.model.conversation import render_for_completion
from snakechat.serve import tool_text
from snakechat.serve.chat_api import APIError, Limits, Sampling, parse_request
from tiny_chat_model import tokenizer

ANSWER = [
    {"type": "text", "text": "it is "},
    {"type": "python", "text": "6*7"},
    {"type": "python_output", "text": "42"},
    {"type": "text", "text": ". so 42"},
]


def python(text):
    return {"type": "python", "text": text}


def output(text):
    return {"type": "python_output", "text": text}


def text(value):
    return {"type": "text", "text": value}


@pytest.mark.parametrize(
    "parts, written",
    [
        (ANSWER, "it is <<6*7=42>>. so 42"),
        ([python("6*")], "<<6*>>"),  # cut inside the call: no answer
        ([python("'a=b'.count('=')"), output("1")], "<<'a=b'.count('=')=1>>"),  # '=' in a string literal
        ([python("1+1"), text(" then "), python("2*3"), output("6")], "<<1+1>> then <<2*3=6>>"),
        ([text("plain")], "plain"),
    ],
)
def test_render_and_parse_round_trip(parts, written):
    assert tool_text.render(parts) == written and tool_text.parse(written) == parts


def test_streamed_deltas_join_to_the_rendered_reply():
    pieces = [("text", "it is "), ("python", "6*7"), ("python_output", "42"), ("text", ". so 42"), ("python", "1+")]
    calls = tool_text.StreamedCalls()
    deltas = [d for piece in pieces for d in calls.feed(*piece)] + calls.flush()
    parts = ANSWER + [python("1+")]
    assert "".join(t for t, _ in deltas) == tool_text.render(parts)
    assert [p for _, ps in deltas if ps for p in ps] == [python("6*7"), output("42"), python("1+")]
    assert [t for t, ps in deltas if ps] == ["<<6*7=42>>", "<<1+>>"]


def test_content_parts_make_the_round_trip_exact_where_the_string_is_ambiguous():
    """The model wrote `<<a=b>>` as text: the string alone reads it as a call; the reply's
    content_parts, sent back with it, give the tokens the model produced."""
    tok = tokenizer()
    parts = [text("see <<a=b>> "), python("2+2"), output("4")]
    content = tool_text.render(parts)
    assert tool_text.parse(content) != parts

    def prompt(assistant):
        body = {"model": "m", "messages": [{"role": "user", "content": "q"}, assistant, {"role": "user", "content": "and?"}]}
        return parse_request(body, "m", Limits(), Sampling(), tok, 10_000).prompt

    exact = render_for_completion(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": parts}, {"role": "user", "content": "and?"}])
    assert prompt({"role": "assistant", "content": content, "content_parts": parts}) == exact
    assert prompt({"role": "assistant", "content": content}) != exact
    assert prompt({"role": "assistant", "content": "plain <<2+2=4>>"}) == prompt({"role": "assistant", "content": [text("plain "), python("2+2"), output("4")]})
    with pytest.raises(APIError, match=r"content_parts\[0\]: a assistant content part must be"):
        prompt({"role": "assistant", "content": content, "content_parts": [{"type": "image"}]})
