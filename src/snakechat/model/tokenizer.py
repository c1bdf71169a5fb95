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

Training counts words and learns merges with `rustbpe` (nanochat's trainer), whose merges are
then loaded into an HF `tokenizers` BPE model: HF's own trainer (trainer="hf") gives the same
compression but takes twice as long, because every piece of text it counts goes through its
offset-tracking NormalizedString (bench/tokenizer.py measures both). Encoding and decoding go
through a tiktoken `Encoding` built from the same merges, which gives the same ids three to five
times faster than HF (tests and tok_train check that the ids agree). A vocabulary where two
merges make the same token cannot be served by tiktoken's rank rule and stays on HF.
"""

import json
import os
from pathlib import Path

import rustbpe
import tiktoken
import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from snakechat.runtime.common import atomic_path, write_json_atomic

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

TRAINERS = ("rustbpe", "hf")

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


def _train_hf(docs, vocab_size, batch_size=64):
    """HF's BpeTrainer. Documents go in lists of `batch_size`: HF copies 256 items at a time into
    Rust and counts their words on every core, so the batch bounds that buffer."""
    hf = _empty_hf_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    hf.train_from_iterator(_batched(docs, batch_size), trainer)
    return hf


def _train_rustbpe(docs, vocab_size):
    """rustbpe's merges as an HF tokenizer laid out as HF's trainer lays it out: special tokens,
    then the 256 byte characters in sorted order, then one id per merge in merge order."""
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(docs), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = dict(trainer.get_mergeable_ranks())
    as_chars = str.maketrans(byte_to_char())

    def text(token):
        return token.decode("latin-1").translate(as_chars)

    vocab = {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    for char in sorted(byte_to_char().values()):
        vocab[char] = len(vocab)
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _merged_pair(token, rank, ranks)
            merges.append((text(left), text(right)))
            vocab[text(token)] = len(vocab)
    hf = _empty_hf_tokenizer()
    hf.model = models.BPE(vocab=vocab, merges=merges)
    hf.add_special_tokens(SPECIAL_TOKENS)
    return hf


def _merged_pair(token, rank, ranks):
    """The two tokens whose merge made `token`: byte-pair encoding its bytes with only the merges
    made before it stops at exactly two parts. Where only one split of it has two earlier tokens
    (most tokens), that split is the answer without encoding."""
    splits = [i for i in range(1, len(token)) if ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank]
    if len(splits) == 1:
        return token[: splits[0]], token[splits[0] :]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
        i = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
        if pair_ranks[i] >= rank:
            raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two earlier tokens")
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def byte_to_char():
    """GPT-2's byte-level alphabet: each byte as one printable character (HF ByteLevel uses the same)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    spare = 256
    for b in range(256):
        if b not in table:
            table[b] = chr(spare)
            spare += 1
    return table


def tiktoken_encoding(hf_tokenizer, encoding_name="snakechat"):
    """A tiktoken Encoding with the BPE ranks of a trained HF byte-level tokenizer, or None if its
    merges cannot be expressed as tiktoken ranks (some merge yields a token made before it).

    tiktoken merges the adjacent pair whose joined bytes have the lowest rank, HF the pair with
    the earliest merge rule; with ranks in merge order the two agree on trained vocabularies
    (tok_train checks it on its training text and falls back to HF if not).
    """
    spec = json.loads(hf_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    char_to_byte = {c: b for b, c in byte_to_char().items()}
    ranks = {bytes(char_to_byte[c] for c in token): token_id for token, token_id in vocab.items() if token not in SPECIAL_TOKENS}
    last = -1
    for left, right in (m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]):
        made = vocab[left + right]
        if made <= last or made <= max(vocab[left], vocab[right]):
            return None
        last = made
    specials = {name: hf_tokenizer.token_to_id(name) for name in SPECIAL_TOKENS}
    return tiktoken.Encoding(encoding_name, pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


class Tokenizer:
    """A trained tokenizer: encode/decode text, look up special token ids, save and load.

    `encoder` picks what encodes: "tiktoken" (the trained merges served by tiktoken, the default
    where the merges allow it) or "hf".
    """

    def __init__(self, hf_tokenizer, encoder="auto"):
        if encoder not in ("auto", "tiktoken", "hf"):
            raise ValueError(f"encoder must be auto, tiktoken or hf, got {encoder!r}")
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
        self.tiktoken = tiktoken_encoding(self.hf) if encoder != "hf" else None
        if encoder == "tiktoken" and self.tiktoken is None:
            raise ValueError("this vocabulary cannot be served by tiktoken (a merge yields a token made before it)")
        self.encoder = "tiktoken" if self.tiktoken is not None else "hf"

    # ---- building ----
    @classmethod
    def train(cls, texts, vocab_size, doc_cap=10_000, max_chars=None, trainer="rustbpe"):
        """Train on an iterable of documents (each cut to `doc_cap` characters, `max_chars` in all)
        with `trainer`: "rustbpe" (the fast one) or "hf". No normalizer: the text is trained on as it is."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(SPECIAL_TOKENS)} special tokens")
        if trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {', '.join(TRAINERS)}, got {trainer!r}")
        docs = capped_documents(texts, doc_cap, max_chars)
        try:
            hf = _train_rustbpe(docs, vocab_size) if trainer == "rustbpe" else _train_hf(docs, vocab_size)
        except UnicodeEncodeError as e:  # parquet text is always valid; other sources may not be
            raise ValueError(f"training text is not valid Unicode ({e}); pass it through clean_surrogates first") from None
        return cls(hf)

    @classmethod
    def load(cls, directory, encoder="auto"):
        """Load a tokenizer directory. With encoder="auto", a meta.json from tok_train that found
        tiktoken's ids differing from HF's keeps the tokenizer on HF."""
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}")
        meta = directory / "meta.json"
        if encoder == "auto" and meta.exists():
            try:
                encoder = "hf" if json.loads(meta.read_bytes().decode("utf-8")).get("encoder") == "hf" else "auto"
            except (UnicodeDecodeError, ValueError, AttributeError) as e:
                raise ValueError(f"{meta}: not the tokenizer's meta data: {type(e).__name__}: {e}") from None
        try:
            hf = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust library's errors name no file
            raise ValueError(f"{path}: cannot read the tokenizer: {e}") from None
        return cls(hf, encoder=encoder)

    def save(self, directory):
        """Write token_bytes.json, then tokenizer.json, into `directory`, each atomically."""
        directory = Path(directory)
        write_json_atomic(directory / TOKEN_BYTES_FILE, self.token_bytes())
        with atomic_path(directory / TOKENIZER_FILE) as tmp:
            self.hf.save(str(tmp))

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
        if self.tiktoken is not None:
            if not isinstance(text, str):
                raise TypeError(f"can only encode str, got {type(text).__name__}: {text!r:.80}")
            ids = self.tiktoken.encode_ordinary(text)  # tiktoken cleans surrogates by the same rule
            return ids if prepend is None else [prepend] + ids
        return self.encode_batch([text], prepend=prepend)[0]

    def encode_batch(self, texts, prepend=None):
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings; use encode for one string")
        texts = list(texts)
        if self.tiktoken is not None:
            for t in texts:
                if not isinstance(t, str):
                    raise TypeError(f"can only encode str, got {type(t).__name__}: {t!r:.80}")
            if len(texts) < 16:  # a thread pool costs more than it saves
                batch = [self.tiktoken.encode_ordinary(t) for t in texts]
            else:
                batch = self.tiktoken.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
            return batch if prepend is None else [[prepend] + ids for ids in batch]
        return self._hf_encode_batch(texts, prepend)

    def _hf_encode_batch(self, texts, prepend=None):
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
        ids = [int(i) for i in ids]
        if self.tiktoken is not None:
            return self.tiktoken.decode(ids, errors="replace")
        return self.hf.decode(ids, skip_special_tokens=False)

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
