"""Tokenizer speed: training throughput (characters/s) and batch encoding throughput, plus compression.

    python bench/tokenizer.py                                   # the built-in world corpus
    python bench/tokenizer.py ../shared/data/pretrain/shard_0000{0..5}.parquet --vocab-sizes 8192 32768 --trainers rustbpe hf

Given parquet shards, all but the last are training text (documents cut to --doc-cap characters)
and the last is the held-out text that is encoded; without shards the built-in world corpus is
generated (--world-docs documents for training, a quarter as many more held out).

For each trainer (rustbpe, the default, and HF's BpeTrainer) and vocabulary size it prints: the
time to train from documents already in memory (and, per trainer, the part of it spent counting
words, i.e. training to an empty vocabulary; and for rustbpe the time of the bare rustbpe
trainer, before its merges become an HF tokenizer), the time to encode the
held-out text with tiktoken serving the trained merges and with HF `tokenizers` (both in batch,
with every core), whether the two give identical ids, and bytes per token on the held-out text.
Timings are wall-clock, with the process's CPU seconds beside the training time (CPU-s above
wall-s means both cores were busy); on a shared machine run it twice and keep the quieter run.
"""

import argparse
import resource
import time

import pyarrow.parquet as pq
import rustbpe

from snakechat.world import corpus as world_corpus
from snakechat.model.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, TRAINERS, Tokenizer, capped_documents


def read_shards(paths, doc_cap):
    docs = []
    for path in paths:
        docs += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return list(capped_documents(docs, doc_cap))


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_rustbpe(docs, vocab_size):
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(docs), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)


def timed(fn):
    """(result, wall seconds); the CPU seconds of the last call are left in timed.cpu."""
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = fn()
    timed.cpu = cpu_seconds() - cpu_start
    return result, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shards", nargs="*", help="parquet shards (column `text`); the last is held out")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096])
    p.add_argument("--trainers", nargs="+", choices=TRAINERS, default=["rustbpe"])
    p.add_argument("--doc-cap", type=int, default=10_000)
    p.add_argument("--world-docs", type=int, default=20_000, help="built-in corpus size when no shards are given")
    p.add_argument("--skip-count-only", action="store_true", help="do not time the word-counting phase on its own")
    args = p.parse_args(argv)

    (train_docs, held_out), load_s = timed(lambda: (
        (read_shards(args.shards[:-1], args.doc_cap), read_shards(args.shards[-1:], 10**12)) if args.shards
        else (list(world_corpus.corpus_documents(0, args.world_docs)), list(world_corpus.corpus_documents(0, args.world_docs // 4, offset=args.world_docs)))
    ))
    if len(args.shards) == 1:
        raise SystemExit("give at least two shards: training shards, then a held-out shard")
    chars = sum(map(len, train_docs))
    held_bytes = sum(len(t.encode("utf-8")) for t in held_out)
    source = f"{len(args.shards) - 1} training shard(s) + 1 held out" if args.shards else "built-in world corpus"
    print(f"text: {source}; training {chars / 1e6:.1f} M characters in {len(train_docs):,} documents (cap {args.doc_cap:,}); "
          f"held out {held_bytes / 1e6:.1f} MB in {len(held_out):,} documents; read in {load_s:.1f}s")

    header = f"{'trainer':>8} {'vocab':>6} {'train s':>8} {'CPU-s':>6} {'M chars/s':>9} {'tiktoken enc s':>14} {'MB/s':>6} {'HF enc s':>8} {'MB/s':>6} {'same ids':>8} {'bytes/token':>11}"
    for trainer in args.trainers:
        if not args.skip_count_only:
            _, count_s = timed(lambda: Tokenizer.train(train_docs, vocab_size=256 + len(SPECIAL_TOKENS), doc_cap=args.doc_cap, trainer=trainer))
            print(f"{trainer}: word counting alone (training to an empty vocabulary): {count_s:.2f}s, {timed.cpu:.2f} CPU-s ({chars / count_s / 1e6:.2f} M chars/s)")
        print(header)
        for vocab_size in args.vocab_sizes:
            tok, train_s = timed(lambda: Tokenizer.train(train_docs, vocab_size=vocab_size, doc_cap=args.doc_cap, trainer=trainer))
            train_cpu = timed.cpu
            hf = Tokenizer(tok.hf, encoder="hf")
            fast_ids, fast_s = timed(lambda: tok.encode_batch(held_out))
            hf_ids, hf_s = timed(lambda: hf.encode_batch(held_out))
            tokens = sum(map(len, fast_ids))
            print(f"{trainer:>8} {tok.vocab_size:>6} {train_s:>8.2f} {train_cpu:>6.1f} {chars / train_s / 1e6:>9.2f} {fast_s:>14.2f} {held_bytes / fast_s / 1e6:>6.1f} "
                  f"{hf_s:>8.2f} {held_bytes / hf_s / 1e6:>6.1f} {str(fast_ids == hf_ids):>8} {held_bytes / tokens:>11.3f}")
            if trainer == "rustbpe":
                _, bare_s = timed(lambda: bare_rustbpe(train_docs, vocab_size))
                print(f"  (bare rustbpe trainer at vocab {vocab_size}: {bare_s:.2f}s, {timed.cpu:.1f} CPU-s)")
    print(f"peak memory (whole run): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
