"""How well a base model compresses text: bits per byte on the train and validation splits, the
same for a unigram model of the training tokens (the baseline to beat), and greedy samples.

    python -m snakechat.base_loss --checkpoint results/base/tiny \
        --manifest results/data/tinyworld/manifest.json --out results/base_loss/tiny.json \
        --device-batch-rows 8 --split-tokens 262144 --max-new-tokens 24 --prompts '["The capital of"]'
    torchrun --nproc_per_node=8 -m snakechat.base_loss --checkpoint results/base/d20 ...

Needs a base checkpoint (its meta.json names the tokenizer directory, whose token_bytes.json gives
each token's length in bytes) and the data manifest. Bits per byte as snakechat.evaluate.bpb measures it;
each split is measured over `--split-tokens` tokens, spread over the processes.
"""

import argparse
import json

import torch

from snakechat.model import precision
from snakechat.runtime import provenance
from snakechat.runtime import tracking
from snakechat.data import shards
from snakechat.evaluate.bpb import bits_per_byte
from snakechat.model.checkpoint import load_model
from snakechat.runtime.common import all_reduce_tensor, cleanup_distributed, init_distributed, print0, write_json_atomic
from snakechat.train.dataloader import PackedLoader
from snakechat.model.tokenizer import load_token_bytes

DEFAULT_PROMPTS = ["The capital of France is", "The chemical symbol of gold is", "If yesterday was Friday, then tomorrow will be",
                   "The opposite of hot is", "The planets of the solar system are:"]


def token_counts(loader, steps, vocab_size):
    """How often each id occurs as a target in `steps` micro-batches, summed over all processes."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for _ in range(steps):
        _, targets = loader.next_batch()
        counts += torch.bincount(targets[targets >= 0].cpu(), minlength=vocab_size).double()
    return all_reduce_tensor(counts)


def unigram_bits_per_byte(train_counts, val_counts, token_bytes):
    """Bits per byte on the val counts of a unigram model fitted (add-one) to the train counts,
    over ordinary tokens only (special tokens have 0 bytes and are left out, as for the model)."""
    ordinary = token_bytes > 0
    probs = torch.where(ordinary, train_counts + 1, 0.0)
    probs = probs / probs.sum()
    val = torch.where(ordinary, val_counts, 0.0)
    bits = -(val[ordinary] * probs[ordinary].log2()).sum().item()
    return bits / (val * token_bytes).sum().item()


@torch.no_grad()
def greedy_complete(model, tokenizer, prompt, max_new_tokens):
    """Greedy continuation of `prompt` (after <|bos|>), without a KV cache."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt, prepend=tokenizer.bos_id)
    prompt_len = len(ids)
    limit = model.cos.size(1)
    for _ in range(max_new_tokens):
        context = torch.tensor([ids[-limit:]], device=device)
        next_id = model(context)[0, -1].argmax().item()
        if next_id == tokenizer.bos_id:
            break
        ids.append(next_id)
    return tokenizer.decode(ids[prompt_len:])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="base checkpoint directory")
    p.add_argument("--manifest", required=True, help="data manifest.json (last shard = validation)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--device-batch-rows", type=int, default=32, help="rows per process per forward pass")
    p.add_argument("--split-tokens", type=int, default=10 * 2**20, help="tokens measured on each split")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--prompts", type=json.loads, default=DEFAULT_PROMPTS, help="JSON list of prompts for greedy samples")
    p.add_argument("--seed", type=int, default=0, help="which rows of the shards are measured")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", choices=precision.SETTINGS, default="auto", help="auto (bf16 where the device multiplies bf16 natively, else fp32), fp32 or bf16")
    tracking.add_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tracking.check(args.tracking)
    if not isinstance(args.prompts, list) or not all(isinstance(p, str) for p in args.prompts):
        raise SystemExit(f"--prompts must be a JSON list of strings, got {args.prompts!r}")
    rank, _, world_size, device = init_distributed(args.device)
    resolved = precision.resolve(args.precision, device)
    model, tokenizer, meta = load_model(args.checkpoint, device)
    precision.for_inference(model.eval(), resolved)
    token_bytes = load_token_bytes(meta["tokenizer"])
    seq_len = model.config.sequence_len
    rows = args.device_batch_rows * world_size
    steps = max(1, args.split_tokens // (rows * seq_len))

    def loader(split):
        paths = shards.shard_paths(args.manifest, split)
        return PackedLoader(paths, tokenizer, seq_len, args.device_batch_rows, rows, rank, world_size, args.seed, device)

    result = {"tokens_per_split": steps * rows * seq_len, "precision": resolved}
    with precision.autocast(device, resolved):
        for split in ("train", "val"):
            result[f"{split}_bpb"] = bits_per_byte(model, loader(split), steps, token_bytes)
            print0(f"{split} bpb: {result[f'{split}_bpb']:.4f}")
    train_counts = token_counts(loader("train"), steps, model.config.vocab_size)
    val_counts = token_counts(loader("val"), steps, model.config.vocab_size)
    result["unigram_val_bpb"] = unigram_bits_per_byte(train_counts, val_counts, token_bytes)
    print0(f"unigram val bpb: {result['unigram_val_bpb']:.4f}")
    if rank == 0:
        with precision.autocast(device, resolved):
            result["samples"] = [{"prompt": p, "completion": greedy_complete(model, tokenizer, p, args.max_new_tokens)} for p in args.prompts]
        for s in result["samples"]:
            print0(f"{s['prompt']!r} -> {s['completion']!r}")
        result["provenance"] = provenance.record("snakechat.base_loss", vars(args), inputs=[args.checkpoint, args.manifest])
        write_json_atomic(args.out, result)
        tracking.report_results(args, "base_loss", vars(args), result["provenance"],
                                {f"base_loss/{k}": result[k] for k in ("train_bpb", "val_bpb", "unigram_val_bpb")})
    cleanup_distributed()


if __name__ == "__main__":
    main()
