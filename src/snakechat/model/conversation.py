"""Conversations <-> token ids, with the mask that trains only on what the assistant writes.

A conversation is `{"messages": [{"role": ..., "content": ...}, ...]}` (a bare list of messages
works too). Roles alternate user, assistant, user, ...; an optional leading system message is
merged into the first user message, since the model has no system slot. Content is a string,
or for the assistant a list of parts `{"type": "text" | "python" | "python_output", "text": str}`:
a python part is a tool call the assistant writes, a python_output part is what the tool
answered, which the assistant did not write and so is not trained on.

Layout:
    <|bos|> <|user_start|> question <|user_end|>
    <|assistant_start|> text <|python_start|> code <|python_end|>
        <|output_start|> result <|output_end|> more text <|assistant_end|> ...

The mask is 1 on the assistant's text, tool calls (with their delimiters) and <|assistant_end|>,
and 0 on <|bos|>, everything of the user, <|assistant_start|> (the prompt supplies it) and tool
outputs.
"""

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output")


def _messages(conversation):
    messages = conversation["messages"] if isinstance(conversation, dict) else conversation
    if not isinstance(messages, list):
        raise ValueError(f"a conversation is a list of messages or {{'messages': [...]}}, got {type(messages).__name__}")
    return messages


def _parts(content, where):
    """Content as a list of (type, text) parts."""
    if isinstance(content, str):
        return [("text", content)]
    if not isinstance(content, list):
        raise ValueError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES or not isinstance(part.get("text"), str):
            raise ValueError(f"{where}, part {j}: expected {{'type': one of {PART_TYPES}, 'text': str}}, got {part!r:.200}")
        parts.append((part["type"], part["text"]))
    return parts


def _turns(messages):
    """[(role, parts)] alternating user/assistant from a user, the system message merged into the first user turn."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or "content" not in message:
            raise ValueError(f"message {i}: expected {{'role': one of {ROLES}, 'content': ...}}, got {message!r:.200}")
    turns = []
    system = None
    for i, message in enumerate(messages):
        role, where = message["role"], f"message {i} ({message['role']})"
        parts = _parts(message["content"], where)
        if role == "system":
            if i != 0:
                raise ValueError(f"{where}: a system message may only come first")
            if len(messages) < 2 or messages[1]["role"] != "user":
                raise ValueError(f"{where}: a system message must be followed by a user message")
            system = "".join(text for _, text in parts)
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"{where}: expected a {expected} message here (roles alternate user, assistant, ... from a user)")
        if role == "user":
            if any(kind != "text" for kind, _ in parts):
                raise ValueError(f"{where}: user content can only be text")
            text = "".join(t for _, t in parts)
            if system is not None:
                text = system + "\n\n" + text
                system = None
            parts = [("text", text)]
        turns.append((role, parts))
    return turns


def _segments(tok, turns):
    """(special name or None, text, mask) in order; specials stand alone, texts are encoded later."""
    segments = [("<|bos|>", None, 0)]
    for role, parts in turns:
        if role == "user":
            segments += [("<|user_start|>", None, 0), (None, parts[0][1], 0), ("<|user_end|>", None, 0)]
            continue
        segments.append(("<|assistant_start|>", None, 0))
        for kind, text in parts:
            if kind == "text":
                segments.append((None, text, 1))
            elif kind == "python":
                segments += [("<|python_start|>", None, 1), (None, text, 1), ("<|python_end|>", None, 1)]
            else:
                segments += [("<|output_start|>", None, 0), (None, text, 0), ("<|output_end|>", None, 0)]
        segments.append(("<|assistant_end|>", None, 1))
    return segments


def _render(tok, turns):
    segments = _segments(tok, turns)
    texts = [text for special, text, _ in segments if special is None and text]
    encoded = iter(tok.encode_batch(texts)) if texts else iter(())
    ids, mask = [], []
    for special, text, m in segments:
        piece = [tok.special_id(special)] if special is not None else (next(encoded) if text else [])
        ids += piece
        mask += [m] * len(piece)
    return ids, mask


def render_conversation(tok, conversation, max_tokens=None):
    """(ids, mask) of a whole conversation, both cut to `max_tokens` when given."""
    ids, mask = _render(tok, _turns(_messages(conversation)))
    if max_tokens is not None:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_for_completion(tok, conversation):
    """Ids that prompt the assistant's next message: a trailing assistant message is dropped and
    the ids end with <|assistant_start|>."""
    messages = _messages(conversation)
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    turns = _turns(messages)
    if not turns or turns[-1][0] != "user":
        raise ValueError("a conversation to complete must end with a user message (after dropping a trailing assistant message)")
    ids, _ = _render(tok, turns)
    return ids + [tok.special_id("<|assistant_start|>")]
