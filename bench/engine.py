"""Generation speed of snakechat.model.engine: tokens/s for batch sizes 1 and 16, with and without the KV cache,
in each precision (fp32 and bf16, snakechat.model.precision) and, for random models, each recipe at the same
depth (nanochat-2025-11 and nanochat-2026-07, snakechat.model.recipes), and of transformers' `generate` on
the 2025 model exported by snakechat.export_hf (float32; the 2026 model does not export).

    python bench/engine.py                                   # random depth-4 model, tiny-sized
    python bench/engine.py --checkpoint results/sft/tiny
    python bench/engine.py --depth 20 --vocab-size 65536 --sequence-len 2048 --new-tokens 256

Tokens/s counts generated tokens over all rows (batch 16 makes 16 per step), per second of wall
time on GPU and per CPU-second of this process on CPU (a shared machine's load disturbs that much
less; with --threads 1 it is what one quiet core would do). Sampling runs at
temperature 1 so no row stops early on a stop token it happens to like; rows keep going to
--new-tokens (a stop token ends only that row's reading, the batch keeps stepping).

The `transformers` row (needs the hf extra) samples the same prompt at temperature 1 without top-k
or top-p, `min_new_tokens` keeping every row going to --new-tokens, with transformers' KV cache; its
ratio is against snakechat's engine with the cache at the same batch size, measured in the same run.
snakechat prefills the prompt once and copies its cache to every row; transformers prefills each row.
On the 2-core VM (depth 4, 3.8M parameters, --threads 1, a busy machine) transformers made 136 vs
242 tokens/s at batch 1 (0.56x) and 765 vs 1032 at batch 16 (0.74x).
Every ratio is against the first engine (first recipe, first precision) with the cache at the same batch size.

Measured with the random depth-4 model (3.8M parameters), `--threads 1`, tokens per CPU-second,
2026-12-02:

| CPU | precision | batch 1, KV cache | batch 16, KV cache | batch 1, no cache | batch 16, no cache |
|---|---|---|---|---|---|
| Xeon, AMX + AVX512-BF16 (native bf16) | fp32 | 365.8 | 2129.9 | 68.3 | 92.0 |
| | bf16 | 265.0 (0.72×) | 2564.9 (1.20×) | 98.9 | 195.0 |
| EPYC, AVX2 only (emulated bf16; `--repeats 1`) | fp32 | 282.9 | 1566.0 | 53.6 | 53.9 |
| | bf16 | 243.8 (0.86×) | 724.5 (0.46×) | 9.2 | 8.4 |

With native bf16, batch 16 and the uncached forwards (whole-sequence matmuls) gain, but one row's
decoding is slower: each of its matrix-vector products costs oneDNN's bf16 path a fixed 30–40 µs
(a 256 × 256 one: 38 µs in bf16, 8 µs in fp32), and this model's products are that small. At
depth 12 (87M parameters; `--depth 12 --new-tokens 32 --prompt-tokens 16 --repeats 1`, while
other work ran on the second core) bf16 breaks even at batch 1 (27.2 vs 27.0 tokens per CPU-s)
and makes 1.87× fp32's at batch 16 (359.3 vs 191.7). Emulated bf16 costs half the speed at
batch 16; `auto` picks fp32 there.

Both recipes at depth 4 (3.8M and 4.6M parameters: the 2026 model adds two value-embedding
tables), fp32, `--threads 1 --repeats 1 --new-tokens 64 --hf false`, tokens per CPU-second on the
busy 2-core EPYC, 2026-12-06: with the KV cache 244.3 vs 231.7 at batch 1 (0.95×) and 1262.2 vs
1264.1 at batch 16 (1.00×); without it 61.2 vs 53.8 and 84.7 vs 86.3.
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from snakechat.world import corpus as world_corpus
from snakechat.runtime.common import device_type
from snakechat.model.engine import Engine
from snakechat.model import recipes
from snakechat.model.precision import SETTINGS, for_inference, resolve
from snakechat.model.sizing import config_from_depth
from snakechat.model.tokenizer import Tokenizer


def random_model(args, tok, recipe, device):
    """A randomly initialised model of `recipe` and --depth."""
    config = config_from_depth(args.depth, vocab_size=tok.vocab_size, sequence_len=args.sequence_len, recipe=recipe)
    torch.manual_seed(0)
    return recipes.build(config).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device):
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def measure(engines, prompt, batch, new_tokens, use_cache, device, repeats):
    """[(tokens/s, steps)] of each engine, best of `repeats` runs; the engines take turns, so a shared
    machine's load falls on all of them alike."""
    best, steps = [float("inf")] * len(engines), [0] * len(engines)
    for r in range(repeats + 1):  # the first run warms up
        for i, engine in enumerate(engines):
            sync(device)
            start = clock(device)
            steps[i] = sum(1 for _ in engine.generate(prompt, num_samples=batch, max_tokens=new_tokens, temperature=1.0, seed=r, use_cache=use_cache))
            sync(device)
            if r:
                best[i] = min(best[i], clock(device) - start)
    return [(n * batch / t, n) for n, t in zip(steps, best)]


def hf_export(model, tok, root):
    """The model exported by snakechat.export_hf and loaded with transformers (None without transformers)."""
    try:
        import transformers
    except ImportError:
        return None
    from snakechat.model.checkpoint import save_checkpoint
    from snakechat.export_hf import export

    tok.save(root / "tok")
    save_checkpoint(root / "ckpt", model, {"model_config": model.config.to_dict(), "tokenizer": str(root / "tok")})
    export(root / "ckpt", root / "hf")
    return transformers.AutoModelForCausalLM.from_pretrained(root / "hf", dtype=torch.float32).eval()


def measure_hf(hf, prompt, batch, new_tokens, repeats):
    ids = torch.tensor([prompt] * batch)
    mask = torch.ones_like(ids)
    best = float("inf")
    for r in range(repeats + 1):
        torch.manual_seed(r)
        start = time.process_time()  # CPU only
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        if r:
            best = min(best, time.process_time() - start)
    steps = out.shape[1] - len(prompt)
    return steps * batch / best, steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a checkpoint directory; default: a random model of --depth")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--sequence-len", type=int, default=512)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the best is reported)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--precision", nargs="+", choices=SETTINGS, default=["fp32", "bf16"], help="precisions to compare (the first is the baseline)")
    p.add_argument("--recipe", nargs="+", choices=recipes.RECIPES, default=list(recipes.RECIPES), help="models to compare (random models only)")
    p.add_argument("--hf", choices=["auto", "false"], default="auto", help="auto: add the transformers row where transformers is installed (CPU only)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(device_type(args.device))
    if args.checkpoint:
        from snakechat.model.checkpoint import load_model

        model, tok, _ = load_model(args.checkpoint, device)
        models = [model]
    else:
        tok = Tokenizer.train(world_corpus.corpus_documents(0, 3000), vocab_size=args.vocab_size)
        models = [random_model(args, tok, recipe, device) for recipe in args.recipe]
    # each precision's engine samples from the model as the stages load it (precision.for_inference: bf16 weights under bf16)
    resolved = [resolve(setting, device) for setting in args.precision]
    engines = [Engine(m.eval() if r == "fp32" else for_inference(copy.deepcopy(m).eval(), r), tok, precision=r) for m in models for r in resolved]
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    for m in models:
        c = m.config
        print(f"model {recipes.recipe_of_model(m)}: n_layer={c.n_layer} n_embd={c.n_embd} vocab={c.vocab_size} params={m.num_params() / 1e6:.1f}M; "
              f"prompt={args.prompt_tokens} new={args.new_tokens}")
    prompt = torch.randint(0, tok.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    hf = None
    model = next((m for m in models if recipes.recipe_of_model(m) == recipes.NANOCHAT_2025), None)
    if args.hf == "auto" and device.type == "cpu" and model is not None:
        workdir = tempfile.TemporaryDirectory(prefix="bench_engine_")
        hf = hf_export(model, tok, Path(workdir.name))
        if hf is None:
            print("transformers is not installed (pip install 'snakechat[hf]'): no transformers row")
    print(f"{'engine':>12} {'recipe':>16} {'precision':>9} {'batch':>5} {'kv_cache':>8} {'tokens/s':>10} {'steps':>6} {'ratio':>6}")
    for batch in args.batch_sizes:
        baseline = None
        for use_cache in (True, False):
            for engine, (rate, steps) in zip(engines, measure(engines, prompt, batch, args.new_tokens, use_cache, device, args.repeats)):
                baseline = baseline or rate
                print(f"{'snakechat':>12} {recipes.recipe_of_model(engine.model):>16} {engine.precision:>9} {batch:>5} {str(use_cache):>8} {rate:>10.1f} {steps:>6} {rate / baseline:>6.2f}", flush=True)
        if hf is not None:
            rate, steps = measure_hf(hf, prompt, batch, args.new_tokens, args.repeats)
            print(f"{'transformers':>12} {recipes.NANOCHAT_2025:>16} {'fp32':>9} {batch:>5} {'True':>8} {rate:>10.1f} {steps:>6} {rate / baseline:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
