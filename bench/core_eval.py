"""Items per second of the CORE metric for a randomly initialised model of a given size.

    python bench/core_eval.py --bundle ../shared/data/eval_bundle --depth 4 --batch-tokens 1 8192
    python bench/core_eval.py --bundle ../shared/data/eval_bundle --depth 20 --sequence-len 2048 \
        --vocab-size 65536 --max-per-task 200 --batch-tokens 1 32768 --device cuda

The tokenizer is trained on the bundle's own text (or loaded with --tokenizer DIR). Accuracy is
meaningless here (random weights); the figure is throughput: items/s per task and overall, for
each --batch-tokens (1 = one item per forward pass, the unbatched baseline).
"""

import argparse
import time

import torch

from snakechat.evaluate import core_bundle
from snakechat.evaluate import core_eval
from snakechat.runtime.common import device_type
from snakechat.model.gpt import GPT
from snakechat.model.sizing import config_from_depth
from snakechat.model.tokenizer import Tokenizer


def bundle_texts(tasks):
    for t in tasks:
        for item in t.items:
            yield " ".join(str(v) for v in item.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--sequence-len", type=int, default=1024)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--tokenizer", help="tokenizer directory (default: train one on the bundle)")
    p.add_argument("--max-per-task", type=int, default=50)
    p.add_argument("--tasks", nargs="*", help="labels to run (default: all)")
    p.add_argument("--batch-tokens", type=int, nargs="+", default=[1, 8192])
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    tasks = [t for t in core_bundle.load_bundle(args.bundle) if not args.tasks or t.label in args.tasks]
    device = torch.device(device_type(args.device))
    tok = Tokenizer.load(args.tokenizer) if args.tokenizer else Tokenizer.train(bundle_texts(tasks), args.vocab_size)
    config = config_from_depth(args.depth, tok.vocab_size, args.sequence_len)
    torch.manual_seed(0)
    model = GPT(config).to(device).eval()
    scorer = core_eval.Scorer(encode=tok.encode_batch, logits=model, bos_id=tok.bos_id, max_len=config.sequence_len, device=device)
    print(f"model: depth {config.n_layer}, width {config.n_embd}, context {config.sequence_len}, vocab {tok.vocab_size}, "
          f"{model.num_params() / 1e6:.1f}M params on {device.type} ({torch.get_num_threads()} threads)")
    core_eval.check_fewshot_room(tasks, args.max_per_task)
    core_eval.evaluate_task(tasks[0], scorer, tasks[0].shots + 1, args.batch_tokens[-1])  # warm-up

    for batch_tokens in args.batch_tokens:
        total_items, total_s = 0, 0.0
        print(f"\nbatch_tokens={batch_tokens}")
        for task in tasks:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            res = core_eval.evaluate_task(task, scorer, args.max_per_task, batch_tokens)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            total_items, total_s = total_items + res.n, total_s + dt
            print(f"  {task.label:<34} {task.kind:<18} n={res.n:<5} {res.n / dt:8.1f} items/s", flush=True)
        print(f"  {'all':<34} {'':<18} n={total_items:<5} {total_items / total_s:8.1f} items/s ({total_s:.1f} s)")


if __name__ == "__main__":
    main()
