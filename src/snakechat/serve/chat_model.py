"""Which checkpoint to chat with, and how to sample from it: the command-line arguments and the
loading that the chat CLI and the web chat share."""

import argparse
from pathlib import Path

from snakechat.model.checkpoint import load_model
from snakechat.runtime.common import device_type
from snakechat.model.engine import Engine
from snakechat.model.precision import SETTINGS, for_inference, resolve

STAGES = ("base", "mid", "sft", "rl")


def at_least(low, kind=int, high=None):
    """An argparse type: a number of `kind` that is >= low (and <= high), or an error saying so."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not value >= low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        if high is not None and not value <= high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    return parse


def add_checkpoint_args(p):
    """--checkpoint DIR, or --model and --stage under --results; device and sampling defaults."""
    p.add_argument("--checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("--model", help="model name (with --stage): the checkpoint is <results>/<stage>/<model>")
    p.add_argument("--stage", choices=STAGES, default="sft")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=SETTINGS, default="auto", help="auto (bf16 where the device multiplies bf16 natively), fp32 or bf16")
    p.add_argument("--temperature", type=at_least(0.0, float), default=0.6, help="0: greedy")
    p.add_argument("--top-k", type=at_least(0), default=50, help="sample among the k most likely tokens; 0: no top-k filter")
    p.add_argument("--seed", type=at_least(0), default=0)


def checkpoint_dir(p, args):
    """The checkpoint directory the arguments name, or a parser error saying what is missing."""
    if (args.checkpoint is None) == (args.model is None):
        p.error("give either --checkpoint DIR or --model NAME (with --stage)")
    directory = args.checkpoint or args.results / args.stage / args.model
    if not (directory / "meta.json").exists():
        p.error(f"no checkpoint at {directory} (meta.json missing); train it first, e.g. snakemake {directory}")
    return directory


def load_engine(directory, device="auto", precision="fp32"):
    """(engine, tokenizer) of the checkpoint in `directory`, in eval mode, generating in `precision`."""
    device = device_type(device)
    model, tok, _ = load_model(directory, device)
    precision = resolve(precision, device)
    return Engine(for_inference(model.eval(), precision), tok, precision=precision), tok
