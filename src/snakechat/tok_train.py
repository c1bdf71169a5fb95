"""Train the tokenizer on a dataset's training shards.

    python -m snakechat.tok_train --manifest results/data/tinyworld/manifest.json \
        --out results/tokenizer/tinyworld-4k --vocab-size 4096 --max-chars 20000000 --doc-cap 10000 \
        --trainer rustbpe

Needs the dataset's manifest.json with its shards beside it (the last shard, the validation
split, is not trained on). Writes into --out: tokenizer.json, token_bytes.json (the byte length
of every id, 0 for special tokens) and meta.json (settings, timings, the check that tiktoken and
HF give the same ids, provenance). tokenizer.json is written last, each file atomically.
"""

import argparse
import itertools
import time
from pathlib import Path

from snakechat.runtime.common import write_json_atomic
from snakechat.runtime.provenance import record
from snakechat.data.shards import ShardError, iter_texts, shard_paths
from snakechat.model.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, TRAINERS, Tokenizer, capped_documents

CHECK_DOCS = 256  # training documents on which tiktoken's ids are checked against HF's


class CharCounter:
    """Passes documents through, counting them and their characters."""

    def __init__(self, texts):
        self.texts, self.docs, self.chars = texts, 0, 0

    def __iter__(self):
        for text in self.texts:
            self.docs += 1
            self.chars += len(text)
            yield text


def encoders_agree(tok, texts):
    """True when the tiktoken encoder gives exactly HF's ids on `texts` (trivially True on HF)."""
    if tok.tiktoken is None:
        return True
    return tok.encode_batch(texts) == tok._hf_encode_batch(texts)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="the dataset's manifest.json")
    p.add_argument("--out", required=True, help="directory for tokenizer.json, token_bytes.json, meta.json")
    p.add_argument("--vocab-size", type=int, required=True, help="ids in all: 256 bytes + merges + special tokens")
    p.add_argument("--max-chars", type=int, required=True, help="characters of training text to read")
    p.add_argument("--doc-cap", type=int, required=True, help="characters kept from each document")
    p.add_argument("--trainer", choices=TRAINERS, default="rustbpe", help="who learns the merges (the same compression; rustbpe is about twice as fast)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    minimum = 256 + len(SPECIAL_TOKENS)
    if args.vocab_size < minimum:
        raise SystemExit(f"--vocab-size {args.vocab_size} is below {minimum} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    manifest = Path(args.manifest)
    if not manifest.exists():
        raise SystemExit(f"no dataset manifest at {manifest}")
    try:
        shards = shard_paths(manifest, "train")
    except ShardError as e:
        raise SystemExit(f"{manifest}: training shards missing or not the recorded ones: {e}") from None
    if not shards:
        raise SystemExit(f"{manifest}: training shards missing: the manifest lists fewer than two shards")

    texts = CharCounter(capped_documents(iter_texts(shards), args.doc_cap, args.max_chars))
    start = time.perf_counter()
    tok = Tokenizer.train(texts, args.vocab_size, doc_cap=args.doc_cap, max_chars=args.max_chars, trainer=args.trainer)
    seconds = time.perf_counter() - start
    print(f"trained on {texts.chars:,} characters of {texts.docs:,} documents in {seconds:.1f}s ({texts.chars / seconds:,.0f} chars/s); vocab {tok.vocab_size}")
    if tok.vocab_size < args.vocab_size:
        print(f"warning: the training text only supports {tok.vocab_size} ids, fewer than the {args.vocab_size} asked for")

    sample = list(itertools.islice(capped_documents(iter_texts(shards), args.doc_cap), CHECK_DOCS))
    agree = encoders_agree(tok, sample)
    if not agree:
        print("warning: tiktoken's ids differ from HF's on the training sample; this tokenizer encodes with HF")
        tok = Tokenizer(tok.hf, encoder="hf")

    out = Path(args.out)
    settings = {"vocab_size": args.vocab_size, "max_chars": args.max_chars, "doc_cap": args.doc_cap, "trainer": args.trainer}
    write_json_atomic(out / "meta.json", {
        "settings": settings,
        "vocab_size": tok.vocab_size,
        "special_tokens": {name: tok.special_id(name) for name in SPECIAL_TOKENS},
        "train_chars": texts.chars,
        "train_docs": texts.docs,
        "train_seconds": round(seconds, 3),
        "encoder": tok.encoder,
        "encoder_check": {"texts": len(sample), "identical": agree},
        "provenance": record("snakechat.tok_train", settings, inputs=[manifest]),
    })
    tok.save(out)
    print(f"wrote {out / TOKENIZER_FILE} (encoder: {tok.encoder})")


if __name__ == "__main__":
    main()
