"""base_eval on a Hugging Face causal LM: a tiny randomly initialised GPT-2 with a tokenizer
built offline, saved to a temp dir, scored by the same code into the same CSV."""

import csv
import json
from types import SimpleNamespace

import pytest
import torch

from core_bundle_fixture import CORPUS, small_tasks, write_bundle
from snakechat import base_eval
from snakechat.evaluate import core_bundle
from snakechat.evaluate import core_eval as ce

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'snakechat[hf]')")

N_POSITIONS = 48


def byte_bpe(corpus, vocab_size=320):
    """A byte-level BPE tokenizer trained on `corpus`, with GPT-2's <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus] * 10, trainer)
    return tok


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=byte_bpe(CORPUS), bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=2, bos_token_id=eot, eos_token_id=eot)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.fixture()
def bundle(tmp_path):
    tasks = small_tasks()
    tasks["mc"] = ("multiple_choice", 3, "\nAnswer: ", tasks["mc"][3])  # three shots: longer than the context
    return write_bundle(tmp_path / "bundle", tasks)


def test_hf_model_writes_the_same_csv(tmp_path, gpt2_dir, bundle):
    out = tmp_path / "gpt2.csv"
    base_eval.main(["--hf-path", str(gpt2_dir), "--bundle", str(bundle), "--out", str(out)])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(ce.CSV_COLUMNS)
    assert [r["label"] for r in rows] == ["mc", "schema", "lm", "CORE"]
    assert [r["n"] for r in rows] == ["4", "3", "4", "11"]
    for r in rows:
        assert -1.0 <= float(r["centered"]) <= 1.0
    meta = json.loads((tmp_path / "gpt2.csv.meta.json").read_text())
    assert meta["settings"]["model"] == {"kind": "huggingface", "path": str(gpt2_dir), "model_type": "gpt2", "max_len": N_POSITIONS}


def test_hf_scorer_reads_bos_and_context_from_the_model(gpt2_dir):
    scorer, _ = base_eval.hf_scorer(gpt2_dir, torch.device("cpu"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
    assert scorer.max_len == N_POSITIONS
    assert scorer.bos_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert scorer.encode(["the cat"]) == [tokenizer("the cat", add_special_tokens=False)["input_ids"]]


def test_batched_scores_match_one_sequence_at_a_time(gpt2_dir, bundle):
    """Padding several items into one forward pass must give the same answers as GPT-2 on each
    sequence alone; prompts longer than n_positions must be cropped (GPT-2 fails otherwise)."""
    scorer, _ = base_eval.hf_scorer(gpt2_dir, torch.device("cpu"))
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    widths = []
    for task in core_bundle.load_bundle(bundle):
        prepared = [ce.prepare_item(task, task.items, i, scorer) for i in range(len(task.items))]
        expected = []
        for p in prepared:
            losses, exact = [], []
            for seq, start, end in zip(p.rows, p.starts, p.ends):
                widths.append(len(seq))
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([seq])).logits[0]
                target = torch.tensor(seq[start:end])
                losses.append(torch.nn.functional.cross_entropy(logits[start - 1 : end - 1], target).item())
                exact.append(bool((logits[start - 1 : end - 1].argmax(-1) == target).all()))
            expected.append(exact[0] if task.kind == "language_modeling" else losses.index(min(losses)) == p.gold)
        assert ce.score_items(task.kind, prepared, scorer, batch_tokens=4096) == expected
    assert max(widths) == N_POSITIONS  # the few-shot prompts were cropped to the context


def test_context_length_comes_from_the_config():
    assert base_eval.hf_context_length(transformers.GPT2Config(n_positions=77)) == 77
    assert base_eval.hf_context_length(SimpleNamespace(max_position_embeddings=4096)) == 4096
    assert base_eval.hf_context_length(SimpleNamespace()) is None


def test_bos_falls_back_to_endoftext():
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=byte_bpe(CORPUS))
    assert tok.bos_token_id is None
    assert base_eval.hf_bos_id(tok, "dir") == tok.convert_tokens_to_ids("<|endoftext|>")
