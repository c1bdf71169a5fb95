"""What a model will cost before it is launched: per stage, parameters, tokens, FLOPs, GPUs, wall time, cost, data and disk.

    python -m snakechat.plan d20                      # reads config/config.yaml (+ config/local.yaml), validated
    python -m snakechat.plan d20 --config my.yaml --out results/plan/d20.md

The Snakemake rule `results/plan/{model}.md` passes the validated config as JSON (`--config-json`).
Wall time = FLOPs / (GPUs × peak FLOP/s × assumed MFU); cost = GPU-hours × price. Both assumptions
come from the config's `plan` section. Anchor: nanochat's d20 (≈561M parameters, ≈11B tokens) took
about 3 hours on 8×H100, which this gives at an MFU of about 0.48.
"""

import argparse
import json
from pathlib import Path

import yaml

from snakechat import configcheck, sizing
from snakechat.common import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_BYTES_PER_PARAM = 4  # fp32 weights
STATE_BYTES_PER_PARAM = 12  # weights + up to two optimizer moments


def mixture_examples(mixture):
    """Examples a mixture draws by weight; tasks taken by epochs depend on the data, so are not counted."""
    counted = sum(int(spec.get("weight", 0)) for spec in (mixture or {}).values())
    by_epochs = sorted(t for t, spec in (mixture or {}).items() if "epochs" in spec)
    return counted, by_epochs


def stage_rows(name, cfg):
    """One dict per stage of model `name` in the validated config `cfg`."""
    m = cfg["models"][name]
    tok = cfg["tokenizers"][m["tokenizer"]]
    data = cfg["datasets"][tok["dataset"]]
    plan = cfg["plan"]
    base = sizing.size(m["depth"], tok["vocab_size"], **{k: m["base"][k] for k in sizing.SIZE_KEYS})
    n_params, fpt, seq = base.params, base.flops_per_token, base.sequence_len
    gpus = plan["gpus"]
    rows = []

    def add(stage, tokens, flops, note="", disk=0):
        seconds = flops / (gpus * plan["gpu_peak_flops"] * plan["mfu"]) if flops else 0.0
        rows.append({
            "stage": stage, "tokens": tokens, "flops": flops, "gpus": gpus if flops else 0, "hours": seconds / 3600,
            "usd": seconds / 3600 * gpus * plan["usd_per_gpu_hour"], "disk_bytes": disk, "note": note,
        })

    shard_bytes = data["shards"] * plan["shard_bytes"] if data["kind"] == "http" else 0
    add("data", 0, 0, f"{data['shards']} shards ({data['kind']})", disk=shard_bytes)
    add("tok_train", 0, 0, f"CPU; {min(tok['max_chars'], 10**12):,} characters at most")
    add("base_train", base.training_tokens, base.total_flops, f"{base.steps:,} steps; {base.tokens_per_param:.1f} tokens/param",
        disk=n_params * (CHECKPOINT_BYTES_PER_PARAM + STATE_BYTES_PER_PARAM))
    eval_tokens = m["base"]["eval_tokens"]
    add("base_loss", 2 * eval_tokens, 2 * eval_tokens * fpt / 3, "forward only, train + val")
    conv_tokens = plan["conversation_tokens"]
    for stage in ("mid", "sft"):
        s = m[stage]
        if stage == "mid" and not s["enabled"]:
            rows.append({"stage": "mid", "note": "skipped (mid.enabled: false)"})
            continue
        if s["steps"]:
            step_tokens = s["step_tokens"] if stage == "mid" else s["step_conversations"] * conv_tokens
            t, note = s["steps"] * step_tokens, f"{s['steps']} steps"
        else:
            n, by_epochs = mixture_examples(s["mixture"])
            t = n * conv_tokens * s.get("epochs", 1)
            note = f"{n:,} weighted examples × {conv_tokens} tokens" + (f"; plus {', '.join(by_epochs)} by epochs (data-dependent)" if by_epochs else "")
        add(stage, t, fpt * t, note, disk=n_params * (CHECKPOINT_BYTES_PER_PARAM + STATE_BYTES_PER_PARAM))
    rl = m["rl"]
    if rl["steps"]:
        sampled = rl["steps"] * rl["step_prompts"] * rl["num_samples"] * rl["max_new_tokens"]
        # sampling is a forward per token (1/3 of training FLOPs), then one training pass over the samples
        add("rl", sampled, sampled * fpt * (1 / 3 + 1), f"{rl['steps']} steps × {rl['step_prompts']} prompts × {rl['num_samples']} samples")
    else:
        rows.append({"stage": "rl", "note": "steps from epochs over the training problems (data-dependent)"})
    return {"model": name, "params": n_params, "flops_per_token": fpt, "sequence_len": seq, "rows": rows, "plan": plan}


def human(n, unit=""):
    for suffix, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def render(p):
    plan = p["plan"]
    lines = [
        f"# Plan for `{p['model']}`",
        "",
        f"{human(p['params'])} parameters, {human(p['flops_per_token'])} training FLOPs per token at context {p['sequence_len']}. "
        f"Assumed: {plan['gpus']}× {plan['gpu_type']} at {human(plan['gpu_peak_flops'], 'FLOP/s')} peak, MFU {plan['mfu']:.0%}, "
        f"${plan['usd_per_gpu_hour']}/GPU-hour.",
        "",
        "| stage | tokens | FLOPs | GPUs | wall time | cost | disk | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total_h = total_usd = 0.0
    for r in p["rows"]:
        if "flops" not in r:
            lines.append(f"| {r['stage']} | – | – | – | – | – | – | {r['note']} |")
            continue
        total_h, total_usd = total_h + r["hours"], total_usd + r["usd"]
        wall = f"{r['hours']:.2f} h" if r["hours"] >= 0.1 else f"{r['hours'] * 60:.1f} min" if r["flops"] else "–"
        tokens = human(r["tokens"]) if r["tokens"] else "–"
        flops = f"{r['flops']:.2e}" if r["flops"] else "–"
        disk = human(r["disk_bytes"], "B") if r["disk_bytes"] else "–"
        lines.append(f"| {r['stage']} | {tokens} | {flops} | {r['gpus'] or 'CPU'} | {wall} | ${r['usd']:.2f} | {disk} | {r['note']} |")
    lines += ["", f"**Total: {total_h:.2f} h on {plan['gpus']} GPUs, ${total_usd:,.2f}** (stages marked data-dependent not included)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--config", default=str(ROOT / "config/config.yaml"), help="config file to read and validate")
    parser.add_argument("--overlay", default=configcheck.LOCAL_OVERLAY, help="local overlay applied to --config where it exists, as the Snakefile does (docs/configuration.md)")
    parser.add_argument("--config-json", help="an already validated config, as JSON (what the rule passes)")
    parser.add_argument("--out", help="write the markdown here instead of printing it")
    args = parser.parse_args(argv)
    if args.config_json:
        cfg = json.loads(args.config_json)
    else:
        cfg = configcheck.load(yaml.safe_load(Path(args.config).read_text()), ROOT / "workflow/schemas/config.schema.yaml", [args.config], overlay_path=args.overlay)
    if args.model not in cfg["models"]:
        raise SystemExit(f"model {args.model!r} is not in the config (known: {', '.join(sorted(cfg['models']))})")
    text = render(stage_rows(args.model, cfg))
    if args.out:
        write_text_atomic(args.out, text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
