"""Chat with a checkpoint in the terminal; replies are printed token by token as they are generated.

    python -m snakechat.chat_cli --checkpoint results/sft/tiny
    python -m snakechat.chat_cli --model tiny --stage sft            # results/sft/tiny
    python -m snakechat.chat_cli --model tiny --stage rl -p "How much is 12 times 7?"

Needs a checkpoint directory (any stage; base models have not learned the chat format). In the
interactive loop, `/new` starts a new conversation and `/quit` (or Ctrl-D) leaves.
"""

import argparse
import sys
from pathlib import Path

from snakechat.checkpoint import load_model
from snakechat.common import device_type
from snakechat.conversation import render_for_completion
from snakechat.engine import Engine

STAGES = ("base", "mid", "sft", "rl")


def add_checkpoint_args(p):
    """--checkpoint DIR, or --model and --stage under --results (shared with snakechat.chat_web)."""
    p.add_argument("--checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("--model", help="model name (with --stage): the checkpoint is <results>/<stage>/<model>")
    p.add_argument("--stage", choices=STAGES, default="sft")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--device", default="auto")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-k", type=int, default=50, help="0: no top-k filter")
    p.add_argument("--seed", type=int, default=0)


def checkpoint_dir(p, args):
    """The checkpoint directory the arguments name, or a parser error saying what is missing."""
    if (args.checkpoint is None) == (args.model is None):
        p.error("give either --checkpoint DIR or --model NAME (with --stage)")
    directory = args.checkpoint or args.results / args.stage / args.model
    if not (directory / "meta.json").exists():
        p.error(f"no checkpoint at {directory} (meta.json missing); train it first, e.g. snakemake {directory}")
    return directory


def load_engine(p, args):
    model, tok, _ = load_model(checkpoint_dir(p, args), device_type(args.device))
    return Engine(model.eval(), tok), tok


def reply(engine, tok, messages, args, seed, out=sys.stdout):
    """Stream the assistant's answer to `messages` to `out`, and return it as text."""
    ids = render_for_completion(tok, {"messages": messages})
    pieces = []
    for piece in engine.stream_text(ids, max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k or None, seed=seed):
        pieces.append(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return "".join(pieces)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_args(p)
    p.add_argument("-p", "--prompt", help="answer this one message and exit")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per reply")
    args = p.parse_args(argv)
    engine, tok = load_engine(p, args)
    if args.prompt is not None:
        reply(engine, tok, [{"role": "user", "content": args.prompt}], args, args.seed)
        return
    print("snakechat - /new starts a new conversation, /quit leaves")
    messages, turn = [], 0
    while True:
        try:
            text = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text == "/quit":
            return
        if text == "/new":
            messages = []
            print("(new conversation)")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("snakechat> ", end="", flush=True)
        messages.append({"role": "assistant", "content": reply(engine, tok, messages, args, args.seed + turn)})
        turn += 1


if __name__ == "__main__":
    main()
