"""CORE score of a base model (a snakechat checkpoint or a Hugging Face causal LM) over an eval bundle.

Launch lines:

    python -m snakechat.base_eval --checkpoint results/base/tiny --bundle results/eval_bundle/tinyworld \
        --out results/base_eval/tiny.csv --max-per-task 100
    torchrun --nproc_per_node=8 -m snakechat.base_eval --checkpoint results/base/d20 \
        --bundle results/eval_bundle/core --out results/base_eval/d20.csv
    python -m snakechat.base_eval --hf-path DIR --bundle results/eval_bundle/core --out results/base_eval/gpt2.csv

Inputs: a checkpoint directory (`model.pt`, `meta.json`, whose `tokenizer` names the tokenizer
directory) or a Hugging Face model directory (needs the `hf` extra: `pip install snakechat[hf]`),
and a bundle directory in the DCLM layout (`core.yaml`, `eval_data/`, `eval_meta_data.csv`).
Writes the CSV (one row per task, last row CORE) and `<out>.meta.json` with the settings and
provenance. Under torchrun each rank scores a share of every task's items.
"""

import argparse
from pathlib import Path

from snakechat.evaluate import core_bundle
from snakechat.evaluate import core_eval
from snakechat.model import precision
from snakechat.runtime.common import cleanup_distributed, init_distributed, is_master, print0, write_json_atomic
from snakechat.model.precision import for_inference
from snakechat.runtime import tracking
from snakechat.runtime.provenance import record

HF_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length", "max_seq_len")


def snakechat_scorer(checkpoint_dir, device, precision="fp32"):
    from snakechat.model.checkpoint import load_model

    model, tokenizer, meta = load_model(checkpoint_dir, device)
    for_inference(model.eval(), precision)
    scorer = core_eval.Scorer(
        encode=tokenizer.encode_batch,
        logits=model,
        bos_id=tokenizer.bos_id,
        max_len=model.config.sequence_len,
        device=device,
        precision=precision,
    )
    return scorer, {"kind": "snakechat", "path": str(checkpoint_dir), "step": meta.get("step"), "model_config": meta.get("model_config")}


def hf_context_length(config):
    """The model's own context length, read from its config (never guessed from its name)."""
    for key in HF_CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hf_bos_id(tokenizer, path):
    """The BOS token every sequence starts with: the tokenizer's own, else its <|endoftext|>."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if eot is None or eot == tokenizer.unk_token_id:
        raise ValueError(f"{path}: the tokenizer has neither a BOS token nor <|endoftext|> to start sequences with")
    return eot


def hf_scorer(path, device, precision="fp32"):
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise SystemExit("--hf-path needs transformers: pip install 'snakechat[hf]'") from None
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    bos = hf_bos_id(tokenizer, path)
    scorer = core_eval.Scorer(
        encode=lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"],
        logits=lambda ids: model(input_ids=ids).logits,
        bos_id=bos,
        max_len=hf_context_length(model.config),
        device=device,
        precision=precision,
    )
    return scorer, {"kind": "huggingface", "path": str(path), "model_type": model.config.model_type, "max_len": scorer.max_len}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="snakechat checkpoint directory (results/base/<model>)")
    source.add_argument("--hf-path", type=Path, help="Hugging Face causal LM directory")
    p.add_argument("--bundle", type=Path, required=True, help="eval bundle directory or its core.yaml")
    p.add_argument("--out", type=Path, required=True, help="output CSV")
    p.add_argument("--max-per-task", type=int, default=0, help="items per task after the fixed shuffle (0: all)")
    p.add_argument("--device-batch-tokens", type=int, default=16384, help="padded tokens per process per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", choices=precision.SETTINGS, default="auto", help="auto (bf16 where the device multiplies bf16 natively, else fp32), fp32 or bf16")
    tracking.add_args(p)
    args = p.parse_args(argv)
    if args.max_per_task < 0:
        p.error(f"--max-per-task must be >= 0, got {args.max_per_task}")
    if args.device_batch_tokens < 1:
        p.error(f"--device-batch-tokens must be >= 1, got {args.device_batch_tokens}")
    return args


def main(argv=None):
    args = parse_args(argv)
    tracking.check(args.tracking)
    model_dir = args.checkpoint or args.hf_path
    if not model_dir.is_dir():
        raise SystemExit(f"model directory {model_dir} does not exist")
    tasks = core_bundle.load_bundle(args.bundle, verify=True)  # a bad or changed bundle fails here, before the model loads
    core_eval.check_fewshot_room(tasks, args.max_per_task)
    rank, _, world_size, device = init_distributed(args.device)
    resolved = precision.resolve(args.precision, device)
    scorer, model_info = (snakechat_scorer if args.checkpoint else hf_scorer)(model_dir, device, resolved)
    print0(f"CORE over {len(tasks)} tasks of {args.bundle} for {model_dir} on {world_size} x {device.type} in {resolved}")
    results = core_eval.evaluate_bundle(tasks, scorer, args.max_per_task, args.device_batch_tokens, log=print0)
    core = core_eval.core_score(results)
    print0(f"CORE {core:.4f}")
    if is_master():
        settings = {"max_per_task": args.max_per_task, "device_batch_tokens": args.device_batch_tokens, "precision": args.precision, "bundle": str(args.bundle),
                    "model": model_info}
        bundle_dir = args.bundle if args.bundle.is_dir() else args.bundle.parent
        provenance = record("snakechat.base_eval", settings, inputs=[model_dir, bundle_dir])
        core_eval.write_csv(args.out, results)
        write_json_atomic(f"{args.out}.meta.json", {
            "core": core,
            "tasks": {r.label: {"accuracy": r.accuracy, "centered": r.centered, "n": r.n} for r in results},
            "settings": settings,
            "world_size": world_size,
            "device": device.type,
            "precision": resolved,
            "provenance": provenance,
        })
        per_task = {f"core/{r.label}/{k}": getattr(r, k) for r in results for k in ("accuracy", "centered")}
        tracking.report_results(args, "base_eval", settings, provenance, {"core/CORE": core, **per_task})
    cleanup_distributed()


if __name__ == "__main__":
    main()
