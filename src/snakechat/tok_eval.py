"""Compression of the trained tokenizer and of reference tokenizers, per kind of text.

    python -m snakechat.tok_eval --tokenizer results/tokenizer/tinyworld-4k \
        --manifest results/data/tinyworld/manifest.json --out results/tokenizer/tinyworld-4k/tok_eval.csv \
        --eval-chars 5000000 --references '["gpt2", "cl100k_base"]' --reference-timeout 60

Needs the trained tokenizer directory and the dataset (manifest.json with its shards). Text
kinds: `train` and `val` (whole documents from the start of each split until --eval-chars
characters are reached; not cut to the training's doc_cap, since whole documents are what other
tokenizers' published figures measure) and the built-in `prose`, `code`, `math` and `non-english` texts below. A reference is
a tiktoken encoding name or a path to a tokenizer.json; one that cannot be loaded (no network,
no file) gets rows with status `skipped: <why>` instead of failing the stage. Writes the CSV
(columns tokenizer,text_kind,bytes,tokens,bytes_per_token,tokens_per_byte,status) and
`<csv>.meta.json` with provenance.
"""

import argparse
import csv
import io
import json
import threading
from pathlib import Path

from snakechat.data import shards
from snakechat.runtime.common import atomic_path, write_json_atomic
from snakechat.runtime.provenance import record
from snakechat.model.tokenizer import Tokenizer
from snakechat.runtime.settings import finite_float

COLUMNS = ["tokenizer", "text_kind", "bytes", "tokens", "bytes_per_token", "tokens_per_byte", "status"]

BUILTIN_TEXTS = {
    "prose": (
        "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps "
        "out of habit even though she had known the number for years. From the lamp room she could "
        "see the fishing boats turning for home, their wakes stitching pale lines across the bay. "
        "Nobody in the village remembered when the light had last failed; it was simply there, the "
        "way the tide was there, or the gulls. Still, she checked the wick, polished the lens and "
        "wrote the weather in her ledger: wind from the north-west, moderate, cloud thickening "
        "after six. Later, when the beam swept over the harbour wall, she made tea and read until "
        "the first ship of the night called in on the radio, asking whether the channel was clear."
    ),
    "code": (
        "import json\n"
        "from pathlib import Path\n\n\n"
        "def load_scores(path):\n"
        '    """Read a JSON file of {name: score} and return the names sorted by score."""\n'
        "    scores = json.loads(Path(path).read_text())\n"
        "    return sorted(scores, key=scores.get, reverse=True)\n\n\n"
        "class RunningMean:\n"
        "    def __init__(self):\n"
        "        self.total, self.count = 0.0, 0\n\n"
        "    def add(self, value: float) -> None:\n"
        "        self.total += value\n"
        "        self.count += 1\n\n"
        "    @property\n"
        "    def value(self):\n"
        "        return self.total / max(self.count, 1)\n\n\n"
        'if __name__ == "__main__":\n'
        "    mean = RunningMean()\n"
        "    for i, name in enumerate(load_scores('scores.json')):\n"
        "        mean.add(i ** 0.5)\n"
        "        print(f'{i:3d} {name:<20} {mean.value:.4f}')\n"
    ),
    "math": (
        "Solve 3x + 7 = 25: subtracting 7 gives 3x = 18, so x = 6. Check: 3 * 6 + 7 = 25.\n"
        "The area of a circle of radius r is A = pi * r^2; for r = 4.5 cm, A = 63.617 cm^2.\n"
        "1234 + 5678 = 6912; 9876 - 5432 = 4444; 12 * 34 = 408; 1000 / 8 = 125; 2^10 = 1024.\n"
        "If f(x) = x^3 - 2x + 1 then f'(x) = 3x^2 - 2 and f'(2) = 10.\n"
        "The sum 1 + 2 + ... + 100 = 100 * 101 / 2 = 5050. 17% of 240 is 40.8.\n"
        "Matrix [[1, 2], [3, 4]] has determinant 1*4 - 2*3 = -2 and trace 5.\n"
        "sqrt(144) = 12, log10(1000) = 3, e^0 = 1, sin(pi/2) = 1, 0.1 + 0.2 = 0.30000000000000004.\n"
    ),
    "non-english": (
        "Der Zug nach Hamburg fährt heute wegen Bauarbeiten zwanzig Minuten später ab. "
        "Les enfants ont passé l'après-midi à construire un château de sable sur la plage. "
        "El mercado abre a las ocho y las frutas más frescas se venden antes del mediodía. "
        "Сегодня вечером в библиотеке будет лекция о истории нашего города. "
        "今天的天气很好，我们打算下午去公园散步，然后在湖边喝茶。 "
        "明日は朝早く起きて、駅まで歩いて友だちを迎えに行きます。 "
        "서울의 지하철은 깨끗하고 빠르며 외국인도 쉽게 이용할 수 있습니다. "
        "ذهبت العائلة إلى السوق لشراء الخبز والخضروات الطازجة. "
        "आज सुबह बारिश हुई, इसलिए बच्चे घर के अंदर खेलते रहे। "
        "Η βιβλιοθήκη της πόλης έχει περισσότερα από δέκα χιλιάδες βιβλία."
    ),
}


def dataset_sample(manifest, split, sample_chars):
    """Whole documents from the start of a split, until at least `sample_chars` characters are taken."""
    docs, total = [], 0
    for text in shards.iter_texts(shards.shard_paths(manifest, split)):
        if total >= sample_chars:
            break
        docs.append(text)
        total += len(text)
    return docs


def _load_with_timeout(load, timeout):
    """Run `load()` in a daemon thread: a download that hangs must not hang the stage."""
    result = {}

    def target():
        try:
            result["value"] = load()
        except Exception as e:  # noqa: BLE001 - any failure to load a reference means "skipped"
            result["error"] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RuntimeError("TimeoutError: not loaded in time")
    if "error" in result:
        raise RuntimeError(result["error"])
    return result["value"]


def load_reference(spec, timeout):
    """An `encode_batch(texts) -> list[list[int]]` for a reference: a tokenizer.json path or a tiktoken name."""
    if spec.endswith(".json") or "/" in spec:
        path = Path(spec)
        if not path.exists():
            raise RuntimeError(f"no file {path}")
        import tokenizers

        hf = tokenizers.Tokenizer.from_file(str(path))
        return lambda texts: [e.ids for e in hf.encode_batch_fast(texts, add_special_tokens=False)]

    import tiktoken

    try:
        enc = _load_with_timeout(lambda: tiktoken.get_encoding(spec), timeout)
    except RuntimeError as e:
        print(f"loading tiktoken encoding {spec!r}: {e}")
        raise RuntimeError(f"cannot load tiktoken encoding {spec!r} offline or within {timeout:g}s ({str(e).split(':')[0]})") from None
    return lambda texts: enc.encode_ordinary_batch(texts)


def compression_row(name, kind, texts, encode_batch):
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n_tokens = sum(len(ids) for ids in encode_batch(texts))
    return {
        "tokenizer": name,
        "text_kind": kind,
        "bytes": n_bytes,
        "tokens": n_tokens,
        "bytes_per_token": round(n_bytes / n_tokens, 4) if n_tokens else "",
        "tokens_per_byte": round(n_tokens / n_bytes, 4) if n_bytes else "",
        "status": "ok",
    }


def evaluate(tokenizers_, corpora):
    """Rows for every (tokenizer, text kind); `tokenizers_` maps name -> encode_batch or an Exception."""
    rows = []
    for name, encode_batch in tokenizers_.items():
        for kind, texts in corpora.items():
            if isinstance(encode_batch, Exception):
                rows.append({"tokenizer": name, "text_kind": kind, "bytes": "", "tokens": "", "bytes_per_token": "", "tokens_per_byte": "", "status": "skipped: " + " ".join(str(encode_batch).split())[:300]})
            else:
                rows.append(compression_row(name, kind, texts, encode_batch))
    return rows


def write_csv(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="the trained tokenizer's directory")
    p.add_argument("--name", help="its name in the CSV (default: the directory's name)")
    p.add_argument("--manifest", required=True, help="the dataset's manifest.json")
    p.add_argument("--out", required=True, help="the CSV to write")
    p.add_argument("--eval-chars", type=int, required=True, help="characters of each split to measure (whole documents, so a little more)")
    p.add_argument("--references", default="[]", help="JSON list: tiktoken encoding names or tokenizer.json paths")
    p.add_argument("--reference-timeout", type=finite_float, required=True, help="seconds allowed to load (download) one reference")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        references = json.loads(args.references)
        assert isinstance(references, list) and all(isinstance(r, str) for r in references)
    except (ValueError, AssertionError):
        raise SystemExit(f"--references must be a JSON list of strings, got {args.references!r}") from None
    manifest = Path(args.manifest)
    if not manifest.exists():
        raise SystemExit(f"no dataset manifest at {manifest}")
    tok = Tokenizer.load(args.tokenizer)
    name = args.name or Path(args.tokenizer).name

    encoders = {name: tok.encode_batch}
    for spec in references:
        try:
            encoders[spec] = load_reference(spec, args.reference_timeout)
        except Exception as e:  # noqa: BLE001 - reported in the CSV
            print(f"reference {spec!r} skipped: {e}")
            encoders[spec] = e
    corpora = {split: dataset_sample(manifest, split, args.eval_chars) for split in ("train", "val")}
    corpora.update({kind: [text] for kind, text in BUILTIN_TEXTS.items()})

    rows = evaluate(encoders, corpora)
    write_csv(args.out, rows)
    settings = {"eval_chars": args.eval_chars, "references": references, "reference_timeout": args.reference_timeout}
    write_json_atomic(f"{args.out}.meta.json", {"settings": settings, "provenance": record("snakechat.tok_eval", settings, inputs=[Path(args.tokenizer) / "tokenizer.json", manifest])})
    for row in rows:
        print(f"{row['tokenizer']:>20} {row['text_kind']:>12} {row['bytes_per_token']!s:>8} bytes/token  {row['status']}")


if __name__ == "__main__":
    main()
