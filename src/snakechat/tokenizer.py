"""The tokenizer: byte-level BPE (HF `tokenizers`) with GPT-4-style pre-tokenization and chat special tokens.

Byte-level means every byte is a token, so any UTF-8 text encodes and decodes back exactly.
Python strings can also hold lone surrogates, which are not UTF-8 at all: `encode` turns a
surrogate pair into the character it stands for and a lone surrogate into U+FFFD (the same
rule tiktoken applies), so encoding never fails.

The special tokens are single ids that ordinary text can never produce: `encode` treats the
literal text "<|bos|>" as ordinary characters. Use `special_id(name)` to put them in a sequence.

On disk a tokenizer is a directory with `tokenizer.json` (the HF tokenizer) and
`token_bytes.json` (the UTF-8 byte length of every id, 0 for special tokens; bits-per-byte
needs it).
"""

import json
from pathlib import Path

import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from snakechat.common import atomic_path, write_json_atomic

SPECIAL_TOKENS = [
    "<|bos|>",  # starts every document and every conversation
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",  # the assistant calls the python tool
    "<|python_end|>",
    "<|output_start|>",  # the tool's output, written back into the conversation
    "<|output_end|>",
]

# GPT-4's split pattern with numbers split into groups of at most two digits (GPT-4 uses up to
# three); with small vocabularies two-digit groups waste fewer ids on rare three-digit numbers.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

TOKENIZER_FILE = "tokenizer.json"
TOKEN_BYTES_FILE = "token_bytes.json"


def clean_surrogates(text):
    """`text` as valid Unicode: surrogate pairs joined into their character, lone surrogates -> U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def capped_documents(texts, doc_cap, max_chars=None):
    """Each document cut to `doc_cap` characters, stopping once `max_chars` characters have been yielded."""
    total = 0
    for text in texts:
        if max_chars is not None and total >= max_chars:
            return
        text = text[:doc_cap]
        if max_chars is not None:
            text = text[: max_chars - total]
        total += len(text)
        yield text


def _batched(texts, size):
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _empty_hf_tokenizer():
    """An untrained byte-level BPE pipeline: GPT-4 split, then bytes -> printable characters; no normalizer."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


class Tokenizer:
    """A trained tokenizer: encode/decode text, look up special token ids, save and load."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        self.hf.encode_special_tokens = True  # "<|bos|>" typed in text is ordinary text
        self._special = {}
        for name in SPECIAL_TOKENS:
            token_id = self.hf.token_to_id(name)
            if token_id is None:
                raise ValueError(f"tokenizer has no special token {name!r}")
            self._special[name] = token_id
        self.bos_id = self._special["<|bos|>"]
        self.vocab_size = self.hf.get_vocab_size()

    # ---- building ----
    @classmethod
    def train(cls, texts, vocab_size, doc_cap=10_000, max_chars=None, batch_size=1024):
        """Train on an iterable of documents (each cut to `doc_cap` characters, `max_chars` in all)."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(SPECIAL_TOKENS)} special tokens")
        hf = _empty_hf_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=0,
            show_progress=False,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        hf.train_from_iterator(_batched(capped_documents(texts, doc_cap, max_chars), batch_size), trainer)
        return cls(hf)

    @classmethod
    def load(cls, directory):
        path = Path(directory) / TOKENIZER_FILE
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}")
        return cls(tokenizers.Tokenizer.from_file(str(path)))

    def save(self, directory):
        """Write tokenizer.json and token_bytes.json into `directory`, each atomically."""
        directory = Path(directory)
        with atomic_path(directory / TOKENIZER_FILE) as tmp:
            self.hf.save(str(tmp))
        write_json_atomic(directory / TOKEN_BYTES_FILE, self.token_bytes())

    # ---- using ----
    def special_id(self, name):
        try:
            return self._special[name]
        except KeyError:
            raise KeyError(f"unknown special token {name!r}; known: {', '.join(SPECIAL_TOKENS)}") from None

    @property
    def special_ids(self):
        return set(self._special.values())

    def encode(self, text, prepend=None):
        return self.encode_batch([text], prepend=prepend)[0]

    def encode_batch(self, texts, prepend=None):
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings; use encode for one string")
        texts = list(texts)
        try:
            encodings = self.hf.encode_batch_fast(texts, add_special_tokens=False)
        except TypeError:  # a non-string, or a string with surrogates that Rust cannot take
            for t in texts:
                if not isinstance(t, str):
                    raise TypeError(f"can only encode str, got {type(t).__name__}: {t!r:.80}") from None
            encodings = self.hf.encode_batch_fast([clean_surrogates(t) for t in texts], add_special_tokens=False)
        head = [] if prepend is None else [prepend]
        return [head + e.ids for e in encodings]

    def decode(self, ids):
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def id_to_token_text(self, token_id):
        """What one id decodes to on its own (partial UTF-8 shows as U+FFFD)."""
        return self.decode([token_id])

    def token_bytes(self):
        """UTF-8 byte length of every id; 0 for special tokens."""
        lengths = [0] * self.vocab_size
        specials = self.special_ids
        for token, token_id in self.hf.get_vocab().items():
            if token_id not in specials:
                lengths[token_id] = len(token)  # byte-level: one character per byte
        return lengths


def load_token_bytes(directory):
    """token_bytes.json as a torch.LongTensor indexed by token id."""
    import torch

    path = Path(directory) / TOKEN_BYTES_FILE
    if not path.exists():
        raise FileNotFoundError(f"no token byte lengths at {path}")
    return torch.tensor(json.loads(path.read_text()), dtype=torch.long)
