"""One assistant reply, generated as the parts a conversation is made of (chat CLI and web chat).

The engine produces token ids; a person (and an API client) needs the reply's text as it is
written, and its calculator calls as calls: `Reply(engine, prompt_ids, ...)` iterates over
`(kind, text)` pieces in order:

- `("text", piece)`: more of the reply's text, as soon as it decodes to whole characters;
- `("python", expression)`: a calculator call, once the model closes it with <|python_end|>;
- `("python_output", result)`: what the calculator answered (tokens the engine forced).

`reply.parts` is the whole reply in `snakechat.model.conversation`'s assistant format
(`[{"type": "text" | "python" | "python_output", "text": ...}]`): rendered back into a prompt it
gives the special tokens the model produced, in the same places, so a multi-turn chat shows the
model its own tool calls as it was trained to see them. Specials outside that grammar (a stray
<|user_start|>) stay in the text as their literal names, which encode as ordinary text.

The reply ends at <|assistant_end|> or <|bos|> (finish_reason "stop"), at a `stop` string in its
text ("stop"; the string is not part of the reply), or after `max_tokens` tokens or at the end
of the model's context ("length"). A reply cut inside a tool call keeps what it had as that part.
`reply.tokens` are the ids generated (end token not included), `reply.finish_reason` says why
it ended; both are set once iteration is over. `close()` stops generating early.
"""

from snakechat.model.engine import Engine

TOOL_DELIMITERS = {  # opening special -> (part type, closing special)
    "<|python_start|>": ("python", "<|python_end|>"),
    "<|output_start|>": ("python_output", "<|output_end|>"),
}


class Reply:
    def __init__(self, engine: Engine, prompt, *, max_tokens, temperature=1.0, top_k=None, top_p=None, seed=0, stop=()):
        self.tokenizer = tok = engine.tokenizer
        self.stop = [s for s in stop if s]
        self.tokens = []
        self.parts = []
        self.finish_reason = None
        self._end_ids = {tok.special_id("<|assistant_end|>"), tok.bos_id}
        self._open = {tok.special_id(name): kind for name, (kind, _) in TOOL_DELIMITERS.items()}
        self._close = {kind: tok.special_id(closing) for kind, closing in TOOL_DELIMITERS.values()}
        self._steps = engine.generate(prompt, num_samples=1, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        self._pieces = self._run()

    def __iter__(self):
        return self._pieces

    def close(self):
        self._pieces.close()
        self._steps.close()

    def _add(self, kind, text):
        if self.parts and kind == "text" and self.parts[-1]["type"] == "text":
            self.parts[-1]["text"] += text
        elif text or kind != "text":
            self.parts.append({"type": kind, "text": text})

    def _run(self):
        kind, ids, shown = "text", [], 0  # the part being written: its kind, ids, characters already given out
        decode = self.tokenizer.decode
        try:
            for column, _ in self._steps:
                token = column[0]
                if token in self._end_ids:
                    self.finish_reason = "stop"
                    break
                self.tokens.append(token)
                if kind == "text" and token in self._open:
                    text = decode(ids)  # stop strings are searched within one text part: give out what was held back
                    if len(text) > shown:
                        self._add("text", text[shown:])
                        yield "text", text[shown:]
                    kind, ids, shown = self._open[token], [], 0
                    continue
                if kind != "text" and token == self._close[kind]:
                    text = decode(ids)
                    self._add(kind, text)
                    yield kind, text
                    kind, ids, shown = "text", [], 0
                    continue
                ids.append(token)
                if kind != "text":
                    continue
                text = decode(ids)
                if text.endswith("\ufffd"):  # a multi-byte character not yet complete
                    continue
                cut, ready = self._stop_at(text, shown)
                if ready > shown:
                    self._add("text", text[shown:ready])
                    yield "text", text[shown:ready]
                    shown = ready
                if cut:
                    self.finish_reason = "stop"
                    return
            else:
                self.finish_reason = "length"
            text = decode(ids)  # the rest of the last part: a cut tool call, or text held back for a stop string
            if kind != "text" or len(text) > shown:
                self._add(kind, text[shown:])
                yield kind, text[shown:]
        finally:
            self._steps.close()

    def _stop_at(self, text, shown):
        """(whether a stop string occurs in `text`, how much of `text` may be given out).

        Text that could be the start of a stop string is held back until the next token decides."""
        if not self.stop:
            return False, len(text)
        longest = max(len(s) for s in self.stop)
        start = max(0, shown - longest + 1)  # earlier text was checked before
        hits = [i for s in self.stop if (i := text.find(s, start)) >= 0]
        if hits:
            return True, min(hits)
        for keep in range(min(longest - 1, len(text) - shown), 0, -1):
            tail = text[len(text) - keep :]
            if any(s.startswith(tail) for s in self.stop):
                return False, len(text) - keep
        return False, len(text)
