"""A reply's calculator calls written inside its text, and read back out of it.

OpenAI's clients type a message's `content` as a string, so a reply that used the calculator goes
out as one string with each call written in GSM8K's own annotation: `<<6*7=42>>` for the call
`6*7` and the answer `42` the engine forced (`<<6*7>>` for a call that got no answer). An
assistant message sent back with such a string is read back into the parts
(`{"type": "text" | "python" | "python_output", "text": ...}`), which render into the special
tokens the model produced.

The string alone is exact unless the model's own text contains `<<`...`>>`, a call contains `>>`
or its answer an `=` (a string method's result): so the reply also carries its parts in an extra
field, `content_parts`, which a client may ignore. When a message comes back with
`content_parts` whose rendering is its `content`, those parts are used as they are.
"""

import re

CALL = re.compile(r"<<(.*?)>>", re.DOTALL)


def render_call(python, output=None):
    """`<<python=output>>`, or `<<python>>` for a call without an answer (None: no python part before the output)."""
    expression = "" if python is None else python
    return f"<<{expression}>>" if output is None else f"<<{expression}={output}>>"


def render(parts):
    """The parts as one string, each calculator call and its answer as `<<expression=answer>>`."""
    out, pending = [], None  # pending: the expression of a call whose answer may come next
    for part in parts:
        if part["type"] == "python_output":
            out.append(render_call(pending, part["text"]))
            pending = None
            continue
        if pending is not None:
            out.append(render_call(pending))
            pending = None
        if part["type"] == "python":
            pending = part["text"]
        else:
            out.append(part["text"])
    if pending is not None:
        out.append(render_call(pending))
    return "".join(out)


def parse(text):
    """The parts a string renders: text, and `<<expression=answer>>` as a call and its answer
    (split at the last `=`: expressions may hold one in a string literal, numbers never do),
    `<<expression>>` as a call alone."""
    parts, at = [], 0
    for match in CALL.finditer(text):
        if match.start() > at:
            parts.append({"type": "text", "text": text[at : match.start()]})
        expression, equals, answer = match.group(1).rpartition("=")
        if not equals:
            expression = answer
        parts.append({"type": "python", "text": expression})
        if equals:
            parts.append({"type": "python_output", "text": answer})
        at = match.end()
    if at < len(text):
        parts.append({"type": "text", "text": text[at:]})
    return parts


def has_tools(parts):
    return any(p["type"] != "text" for p in parts)


class StreamedCalls:
    """A reply's pieces, as they are generated, turned into (text, parts) deltas: text pieces as
    they come, and each calculator call once its answer is in (or once it is clear none comes),
    as its `<<...>>` text with the parts it stands for. The deltas' texts join into render(parts)."""

    def __init__(self):
        self.pending = None

    def feed(self, kind, text):
        """The deltas for one (kind, text) piece of snakechat.serve.reply.Reply."""
        out = []
        if kind == "python_output":
            parts = ([] if self.pending is None else [{"type": "python", "text": self.pending}]) + [{"type": kind, "text": text}]
            self.pending = None
            return [(render_call(parts[0]["text"] if len(parts) == 2 else None, text), parts)]
        out += self.flush()
        if kind == "python":
            self.pending = text
        elif text:
            out.append((text, None))
        return out

    def flush(self):
        """The delta of a call left without an answer, if one is pending."""
        if self.pending is None:
            return []
        pending, self.pending = self.pending, None
        return [(render_call(pending), [{"type": "python", "text": pending}])]
