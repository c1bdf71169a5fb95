"""Hand-made CORE bundles in the DCLM layout, and a character n-gram model whose answers are known.

Shared by tests/test_core_eval.py and tests/test_hf_eval.py.
"""

import csv
import json
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from snakechat.evaluate import core_bundle

# A corpus the n-gram model is "trained" on: the right answers of SMALL_TASKS appear in it.
CORPUS = "the sky is blue. grass is green. the cat meows. the dog barks. 2+2= 4. 3+3= 6. "


def write_bundle(root, tasks, baselines=None):
    """tasks: label -> (icl_task_type, num_fewshot, continuation_delimiter or None, items)."""
    root = Path(root)
    entries = []
    for label, (kind, shots, delimiter, items) in tasks.items():
        uri = f"{kind}/{label}.jsonl"
        path = root / "eval_data" / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(it) + "\n" for it in items))
        entry = {"label": label, "dataset_uri": uri, "num_fewshot": [shots], "icl_task_type": kind}
        if delimiter is not None:
            entry["continuation_delimiter"] = delimiter
        entries.append(entry)
    (root / "core.yaml").write_text(yaml.safe_dump({"icl_tasks": entries}, sort_keys=False))
    with open(root / "eval_meta_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Eval Task", "Task Category", "Random baseline", "Description"])
        for label, (kind, *_rest) in tasks.items():
            default = 0 if kind == "language_modeling" else 50
            w.writerow([label, "test", (baselines or {}).get(label, default), "hand-made"])
    core_bundle.write_source(root, source={"hand-made": True})  # the file hashes base_eval checks, as the eval_bundle stage records them
    return root


def small_tasks():
    """Three tasks whose right answers the n-gram model of CORPUS knows; every gold is right."""
    mc = [
        {"query": "what colour is the sky? it is", "choices": ["blue.", "zqxj."], "gold": 0},
        {"query": "grass is", "choices": ["vvkq", "green"], "gold": 1},
        {"query": "the cat", "choices": ["meows", "xjzq"], "gold": 0},
        {"query": "the dog", "choices": ["qqzv", "barks"], "gold": 1},
    ]
    schema = [
        {"context_options": ["the cat", "the xq"], "continuation": "meows.", "gold": 0},
        {"context_options": ["the zv", "the dog"], "continuation": "barks.", "gold": 1},
        {"context_options": ["grass", "qzxjv"], "continuation": "is green.", "gold": 0},
    ]
    lm = [
        {"context": "2+2=", "continuation": "4."},
        {"context": "3+3=  ", "continuation": "6."},  # trailing spaces are trimmed
        {"context": "the sky", "continuation": "is blue."},
        {"context": "3+3=", "continuation": "7."},  # wrong: the model says 6
    ]
    return {
        "mc": ("multiple_choice", 0, None, mc),
        "schema": ("schema", 0, None, schema),
        "lm": ("language_modeling", 0, None, lm),
    }


def char_encode(texts):
    """A character-level tokenizer: ids are code points (all < 128 here); id 0 is BOS."""
    return [[ord(c) for c in t] for t in texts]


class NGramModel(nn.Module):
    """A character n-gram model of a corpus, with back-off: a model 'trained' on the answers.

    The logits at a position are log counts (plus a little smoothing) of the characters that
    followed the longest suffix of the text so far (up to `order - 1` characters) in the corpus.
    """

    def __init__(self, corpus=CORPUS, order=8, vocab=128, max_len=None):
        super().__init__()
        self.order, self.vocab, self.max_len = order, vocab, max_len
        self.next_counts = {}
        for end in range(len(corpus)):
            for k in range(order):
                if end - k < 0:
                    break
                row = self.next_counts.setdefault(corpus[end - k:end], torch.full((vocab,), 0.01))
                row[ord(corpus[end])] += 1
        self.widths = []

    def forward(self, ids):
        self.widths.append(ids.size(1))
        if self.max_len is not None and ids.size(1) > self.max_len:
            raise AssertionError(f"got {ids.size(1)} positions, the context is {self.max_len}")
        out = torch.empty(*ids.shape, self.vocab)
        for b, row in enumerate(ids.tolist()):
            text = "".join(chr(i) for i in row)
            for t in range(len(row)):
                seen = text[: t + 1].lstrip("\0")
                for k in range(min(self.order - 1, len(seen)), -1, -1):
                    counts = self.next_counts.get(seen[len(seen) - k:])
                    if counts is not None:
                        break
                out[b, t] = (counts / counts.sum()).log()
        return out
