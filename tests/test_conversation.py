"""Conversation rendering: the text it encodes, the exact training mask, truncation, completion
prompts and clear errors for malformed conversations."""

import pytest

from snakechat.model.conversation import render_conversation, render_for_completion
from snakechat.model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    text = "What is the capital of the north? The capital is Oslo. Let me compute 12*34 with python. print(12*34) 408 You are snakechat."
    return Tokenizer.train([text] * 50, vocab_size=400)


TOOL_CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are snakechat."},
        {"role": "user", "content": "What is 12*34?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me compute. "},
                {"type": "python", "text": "12*34"},
                {"type": "python_output", "text": "408"},
                {"type": "text", "text": "It is 408."},
            ],
        },
        {"role": "user", "content": "Thanks! And the capital?"},
        {"role": "assistant", "content": "Oslo."},
    ]
}


def test_round_trip_text(tok):
    ids, mask = render_conversation(tok, TOOL_CONVERSATION)
    assert len(ids) == len(mask)
    assert tok.decode(ids) == (
        "<|bos|><|user_start|>You are snakechat.\n\nWhat is 12*34?<|user_end|>"
        "<|assistant_start|>Let me compute. <|python_start|>12*34<|python_end|><|output_start|>408<|output_end|>It is 408.<|assistant_end|>"
        "<|user_start|>Thanks! And the capital?<|user_end|><|assistant_start|>Oslo.<|assistant_end|>"
    )


def test_mask_is_exactly_the_assistants_own_tokens(tok):
    ids, mask = render_conversation(tok, TOOL_CONVERSATION)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "Let me compute. <|python_start|>12*34<|python_end|>It is 408.<|assistant_end|>Oslo.<|assistant_end|>"
    # token by token: what the mask says matches the segment each token belongs to
    sp = tok.special_id
    expected, inside_output, inside_assistant = [], False, False
    for token_id in ids:
        if token_id == sp("<|assistant_start|>"):
            inside_assistant, m = True, 0
        elif token_id == sp("<|assistant_end|>"):
            inside_assistant, m = False, 1
        elif token_id == sp("<|output_start|>"):
            inside_output, m = True, 0
        elif token_id == sp("<|output_end|>"):
            inside_output, m = False, 0
        else:
            m = int(inside_assistant and not inside_output)
        expected.append(m)
    assert mask == expected
    assert mask[0] == 0 and ids[0] == tok.bos_id


def test_plain_string_and_list_of_messages(tok):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    ids, mask = render_conversation(tok, messages)
    assert (ids, mask) == render_conversation(tok, {"messages": messages})
    assert tok.decode(ids) == "<|bos|><|user_start|>hi<|user_end|><|assistant_start|>hello<|assistant_end|>"
    assert sum(mask) == len(tok.encode("hello")) + 1


def test_truncation(tok):
    full_ids, full_mask = render_conversation(tok, TOOL_CONVERSATION)
    for n in (1, 5, len(full_ids) - 1, len(full_ids), len(full_ids) + 10):
        ids, mask = render_conversation(tok, TOOL_CONVERSATION, max_tokens=n)
        assert ids == full_ids[:n] and mask == full_mask[:n]


def test_render_for_completion(tok):
    ids = render_for_completion(tok, TOOL_CONVERSATION)
    assert ids[-1] == tok.special_id("<|assistant_start|>")
    assert tok.decode(ids).endswith("<|user_start|>Thanks! And the capital?<|user_end|><|assistant_start|>")
    assert "Oslo." not in tok.decode(ids)
    prompt_only = {"messages": TOOL_CONVERSATION["messages"][:-1]}
    assert render_for_completion(tok, prompt_only) == ids
    # the prompt is exactly the prefix training sees before the assistant's answer
    full, _ = render_conversation(tok, TOOL_CONVERSATION)
    assert full[: len(ids)] == ids


def test_system_message_merged_into_first_user_turn(tok):
    ids, _ = render_conversation(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi."}])
    assert tok.decode(ids).startswith("<|bos|><|user_start|>Be brief.\n\nHi<|user_end|>")


@pytest.mark.parametrize(
    "messages, match",
    [
        ([{"role": "assistant", "content": "hi"}], "message 0 \\(assistant\\): expected a user message"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "message 1 \\(user\\): expected a assistant"),
        ([{"role": "robot", "content": "x"}], "message 0: expected"),
        ([{"role": "user"}], "message 0: expected"),
        ([{"role": "user", "content": 3}], "content must be a string or a list"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "image", "text": "x"}]}], "message 1 \\(assistant\\), part 0"),
        ([{"role": "user", "content": [{"type": "python", "text": "1+1"}]}], "user content can only be text"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "system message may only come first"),
        ([{"role": "system", "content": "s"}], "must be followed by a user message"),
        ("not a list", "a conversation is a list of messages"),
    ],
)
def test_malformed_conversations_are_named(tok, messages, match):
    with pytest.raises(ValueError, match=match):
        render_conversation(tok, messages if isinstance(messages, str) else {"messages": messages})


def test_completion_needs_a_user_message_last(tok):
    with pytest.raises(ValueError, match="must end with a user message"):
        render_for_completion(tok, {"messages": []})
