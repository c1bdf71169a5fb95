"""The tokenizer: exact round trips of any text, special tokens, both encoders agreeing, the
byte lengths bits-per-byte needs, and the tok_train / tok_eval stages on small parquet shards."""

import csv
import json
import random

import pytest
import torch

from snakechat import tok_eval, tok_train
from snakechat.world import corpus as world_corpus
from snakechat.model.tokenizer import SPECIAL_TOKENS, TRAINERS, Tokenizer, _empty_hf_tokenizer, byte_to_char, capped_documents, load_token_bytes
from world_dataset import write_dataset

WORDS = (
    "the a river city north market old bridge people were and of to in is was she he they walked "
    "across quickly because after night morning 1984 42 7 3.14 don't it's we'll I'm you're ALL-CAPS "
    "naïve café Zürich straße 東京 北京 日本語 москва улица 🙂 🚀 e\u0301 \t tab ( ) [ ] { } = + - * / ; : ! ? ..."
).split(" ")


def make_docs(n, seed=0):
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(1, 4)):
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) + rng.choice([".", "!", "?", ""]))
        docs.append(rng.choice(["", "  ", "\n"]).join(lines).replace("  ", "\n\n", 1) + f" {rng.randint(0, 10**6)}")
    return docs


TRICKY = [
    "",
    " ",
    "hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand\r\rcarriage returns\n\n\n",
    "日本語のテキストと中文文本，还有한국어 문장.",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353 decomposed vs composed é",
    "controls: " + "".join(chr(c) for c in range(0, 32)) + "\x7f" + "".join(chr(c) for c in range(0x80, 0xA0)),
    "BOM \ufeff zero width \u200b\u200c\u200d RTL \u202e עברית العربية",
    "planes: \U00010000 \U0001F600 \U0010FFFF private \ue000 nonchar \ufffe\uffff replacement \ufffd",
    "numbers 1234567890 3.14159 -42 1e-9 0x1F 1,000,000",
    "code: def f(x):\n    return x**2  # comment\n",
    "<|bos|> literal special tokens <|user_start|>hi<|user_end|><|assistant_end|>",
    "ĠĊ byte-level alphabet characters Ġhello Ċ",
    "a" * 5000,
]


def random_unicode(rng, n):
    """A string of random code points from every plane, surrogates excluded."""
    chars = []
    for _ in range(n):
        cp = rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0x800), rng.randrange(0x800, 0xD800), rng.randrange(0xE000, 0x10000), rng.randrange(0x10000, 0x110000)])
        chars.append(chr(cp))
    return "".join(chars)


@pytest.fixture(scope="module")
def docs():
    return make_docs(400)


@pytest.fixture(scope="module")
def tok(docs):
    return Tokenizer.train(docs, vocab_size=700, doc_cap=10_000)


@pytest.fixture(scope="module")
def hf_tok(tok):
    return Tokenizer(tok.hf, encoder="hf")


def test_trains_to_the_requested_size_and_serves_through_tiktoken(tok):
    assert tok.vocab_size == 700
    assert tok.encoder == "tiktoken"


@pytest.mark.parametrize("text", TRICKY)
def test_any_text_round_trips_exactly_on_both_encoders(tok, hf_tok, text):
    ids = tok.encode(text)
    assert ids == hf_tok.encode(text)
    assert tok.decode(ids) == text
    assert hf_tok.decode(ids) == text


def test_random_unicode_round_trips(tok, hf_tok):
    rng = random.Random(1)
    texts = [random_unicode(rng, rng.randint(1, 200)) for _ in range(200)]
    batch = tok.encode_batch(texts)
    assert batch == hf_tok.encode_batch(texts)
    assert [tok.decode(ids) for ids in batch] == texts


def test_encoders_agree_on_training_like_text(tok, hf_tok):
    texts = make_docs(300, seed=7) + list(tok_eval.BUILTIN_TEXTS.values())
    assert tok.encode_batch(texts) == hf_tok.encode_batch(texts)


def test_surrogates_pair_joined_lone_replaced(tok, hf_tok):
    cases = {
        "a\ud800b": "a\ufffdb",  # lone high surrogate
        "x\udfffy": "x\ufffdy",  # lone low surrogate
        "\ud83d\ude00!": "\U0001F600!",  # a pair that stands for one character
        "\udc00\ud800": "\ufffd\ufffd",  # pair in the wrong order
    }
    for text, expected in cases.items():
        for t in (tok, hf_tok):
            assert t.decode(t.encode(text)) == expected
            assert t.encode(text) == t.encode(expected)
        assert tok.encode_batch([text] * 20) == [tok.encode(expected)] * 20
        assert hf_tok.encode_batch([text, "ok"]) == [hf_tok.encode(expected), hf_tok.encode("ok")]


def test_special_tokens_are_single_ids_that_text_never_produces(tok, hf_tok):
    ids = {name: tok.special_id(name) for name in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    assert tok.bos_id == ids["<|bos|>"]
    for name, token_id in ids.items():
        assert tok.decode([token_id]) == name
    literal = "".join(SPECIAL_TOKENS) + " " + " ".join(SPECIAL_TOKENS)
    for t in (tok, hf_tok):
        encoded = t.encode(literal)
        assert not set(encoded) & set(ids.values())
        assert t.decode(encoded) == literal
        assert all(len(t.encode(name)) > 1 for name in SPECIAL_TOKENS)
    with pytest.raises(KeyError, match="unknown special token"):
        tok.special_id("<|nope|>")


def test_digits_split_into_groups_of_at_most_two(tok):
    for token_id in tok.encode("x 1234567890 and 98765"):
        piece = tok.decode([token_id])
        assert not (sum(ch.isdigit() for ch in piece) > 2)


def test_prepend(tok):
    assert tok.encode("hi", prepend=tok.bos_id) == [tok.bos_id] + tok.encode("hi")
    assert tok.encode_batch(["a", "b"], prepend=tok.bos_id) == [[tok.bos_id] + tok.encode("a"), [tok.bos_id] + tok.encode("b")]
    many = [f"text {i}" for i in range(40)]  # large enough for the threaded path
    assert tok.encode_batch(many, prepend=tok.bos_id) == [[tok.bos_id] + tok.encode(t) for t in many]


def test_bad_input_is_rejected_clearly(tok, docs):
    with pytest.raises(TypeError, match="can only encode str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="can only encode str"):
        tok.encode_batch(["ok", 3])
    with pytest.raises(TypeError, match="list of strings"):
        tok.encode_batch("a string")
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(docs, vocab_size=260)
    for trainer in TRAINERS:
        with pytest.raises(ValueError, match="not valid Unicode"):
            Tokenizer.train(["fine text", "a lone \ud800 surrogate"], vocab_size=300, trainer=trainer)


def test_token_bytes_count_every_byte_once(tok, tmp_path):
    tok.save(tmp_path)
    lengths = load_token_bytes(tmp_path)
    assert lengths.dtype == torch.long and lengths.shape == (tok.vocab_size,)
    for name in SPECIAL_TOKENS:
        assert lengths[tok.special_id(name)] == 0
    assert (lengths[[i for i in range(tok.vocab_size) if i not in tok.special_ids]] >= 1).all()
    for text in TRICKY + make_docs(20, seed=3):
        ids = tok.encode(text)
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))


def test_save_load_gives_the_same_tokenizer(tok, tmp_path):
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token_bytes.json", "tokenizer.json"]
    loaded = Tokenizer.load(tmp_path)
    text = " ".join(TRICKY)
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.vocab_size == tok.vocab_size and loaded.bos_id == tok.bos_id
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "missing")


def test_hf_serves_what_tiktoken_cannot(tok, tmp_path):
    """Two merges making the same token have no tiktoken ranks: such a vocabulary stays on HF, as
    does a directory whose tok_train check found the encoders differing."""
    from tokenizers import models

    vocab = {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + b for b, ch in byte_to_char().items()})
    for token in ("ab", "bc", "abc"):
        vocab[token] = len(vocab)
    hf = _empty_hf_tokenizer()
    hf.model = models.BPE(vocab, [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")])
    odd = Tokenizer(hf)
    assert odd.encoder == "hf"
    assert odd.decode(odd.encode("abcabc xyz")) == "abcabc xyz"
    with pytest.raises(ValueError, match="cannot be served by tiktoken"):
        Tokenizer(hf, encoder="tiktoken")

    tok.save(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"encoder": "hf"}))
    assert Tokenizer.load(tmp_path).encoder == "hf"


def test_both_trainers_learn_the_same_tokenizer(docs, tok):
    """rustbpe (the default) and HF's trainer count the same words and merge by the same rule; they
    break ties between pairs of equal count differently, so the vocabularies may differ only in
    such merges, and compress alike. The file layout is HF's either way."""
    hf_trained = Tokenizer.train(docs, vocab_size=700, doc_cap=10_000, trainer="hf")
    ours, theirs = json.loads(tok.hf.to_str()), json.loads(hf_trained.hf.to_str())
    assert {k: v for k, v in ours.items() if k != "model"} == {k: v for k, v in theirs.items() if k != "model"}
    assert [ours["model"]["vocab"][ch] for ch in byte_to_char().values()] == [theirs["model"]["vocab"][ch] for ch in byte_to_char().values()]
    shared = set(ours["model"]["vocab"]) & set(theirs["model"]["vocab"])
    assert len(shared) >= 0.95 * 700
    held_out = make_docs(50, seed=7) + TRICKY
    ours_n, theirs_n = sum(map(len, tok.encode_batch(held_out))), sum(map(len, hf_trained.encode_batch(held_out)))
    assert abs(ours_n - theirs_n) <= 0.005 * theirs_n

    world_docs = list(world_corpus.corpus_documents(0, 1000))  # no tied counts in its first merges: byte-identical files
    assert Tokenizer.train(world_docs, vocab_size=400).hf.to_str() == Tokenizer.train(world_docs, vocab_size=400, trainer="hf").hf.to_str()
    with pytest.raises(ValueError, match="trainer must be one of rustbpe, hf"):
        Tokenizer.train(world_docs, vocab_size=300, trainer="sentencepiece")


def test_training_is_deterministic(docs, tok):
    again = Tokenizer.train(docs, vocab_size=700, doc_cap=10_000)
    assert again.hf.to_str() == tok.hf.to_str()


def test_doc_cap_and_max_chars():
    docs = ["abcdef", "ghij", "klmnopq"]
    assert list(capped_documents(docs, doc_cap=3)) == ["abc", "ghi", "klm"]
    assert list(capped_documents(docs, doc_cap=3, max_chars=7)) == ["abc", "ghi", "k"]
    # what lies past the cap is never seen: a word that only appears there does not become a token
    filler = "the cat sat on the mat. "
    capped = [filler * 10 + " zyzzyvaquux" * 50 for _ in range(50)]
    tok = Tokenizer.train(capped, vocab_size=400, doc_cap=len(filler) * 10)
    assert len(tok.encode(" zyzzyvaquux")) > 3
    uncapped = Tokenizer.train(capped, vocab_size=400, doc_cap=10_000)
    assert len(uncapped.encode(" zyzzyvaquux")) == 1


# ---- the stages ----


def test_tok_train_and_tok_eval_stages(tmp_path):
    long_doc = "VALIDATION ONLY " * 1000  # 16,000 characters: longer than the training's doc_cap
    manifest = write_dataset(tmp_path / "data", [make_docs(200, seed=10), make_docs(200, seed=11), [long_doc] * 3])
    out = tmp_path / "tok"
    tok_train.main(["--manifest", str(manifest), "--out", str(out), "--vocab-size", "600", "--max-chars", "10000000", "--doc-cap", "10000"])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vocab_size"] == 600 and meta["encoder"] == "tiktoken" and meta["encoder_check"]["identical"]
    assert meta["train_docs"] == 400 and meta["settings"]["trainer"] == "rustbpe"  # the validation shard is not trained on
    assert meta["provenance"]["module"] == "snakechat.tok_train"
    tok = Tokenizer.load(out)
    assert len(tok.encode("VALIDATION")) > 1
    assert len(json.loads((out / "token_bytes.json").read_text())) == 600

    reference = tmp_path / "ref"
    Tokenizer.train(make_docs(100, seed=12), vocab_size=300).save(reference)
    csv_path = out / "tok_eval.csv"
    refs = [str(reference / "tokenizer.json"), "no_such_tiktoken_encoding", str(tmp_path / "missing" / "tokenizer.json")]
    tok_eval.main(["--tokenizer", str(out), "--manifest", str(manifest), "--out", str(csv_path), "--eval-chars", "20000",
                   "--references", json.dumps(refs), "--reference-timeout", "30"])
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == tok_eval.COLUMNS
    kinds = ["train", "val", "prose", "code", "math", "non-english"]
    assert [(r["tokenizer"], r["text_kind"]) for r in rows] == [(name, k) for name in ["tok", *refs] for k in kinds]
    by = {(r["tokenizer"], r["text_kind"]): r for r in rows}
    for name in ("tok", refs[0]):
        for k in kinds:
            r = by[name, k]
            assert r["status"] == "ok"
            assert float(r["bytes_per_token"]) == pytest.approx(int(r["bytes"]) / int(r["tokens"]), rel=1e-3)
            assert float(r["tokens_per_byte"]) == pytest.approx(int(r["tokens"]) / int(r["bytes"]), rel=1e-3)
    assert int(by["tok", "train"]["bytes"]) <= 20000 * 4
    # whole documents until --eval-chars is reached: two uncut validation documents, not 20,000 characters of cut ones
    assert int(by["tok", "val"]["bytes"]) == 2 * len(long_doc)
    # the bigger vocabulary trained on this text compresses it better than the small reference
    assert float(by["tok", "train"]["bytes_per_token"]) > float(by[refs[0], "train"]["bytes_per_token"])
    for name in refs[1:]:
        assert all(by[name, k]["status"].startswith("skipped: ") and by[name, k]["tokens"] == "" for k in kinds)
    assert json.loads((tmp_path / "tok" / "tok_eval.csv.meta.json").read_text())["provenance"]["module"] == "snakechat.tok_eval"


def test_tok_train_rejects_bad_input_before_training(tmp_path):
    with pytest.raises(SystemExit, match="no dataset manifest"):
        tok_train.main(["--manifest", str(tmp_path / "nope.json"), "--out", str(tmp_path / "t"), "--vocab-size", "600", "--max-chars", "10", "--doc-cap", "10"])
    manifest = write_dataset(tmp_path / "d", [["a"], ["b"]])
    with pytest.raises(SystemExit, match="vocab-size 100"):
        tok_train.main(["--manifest", str(manifest), "--out", str(tmp_path / "t"), "--vocab-size", "100", "--max-chars", "10", "--doc-cap", "10"])
    (tmp_path / "d" / "shard_00000.parquet").unlink()
    with pytest.raises(SystemExit, match="training shards missing"):
        tok_train.main(["--manifest", str(manifest), "--out", str(tmp_path / "t"), "--vocab-size", "600", "--max-chars", "10", "--doc-cap", "10"])
    assert not (tmp_path / "t").exists()


def test_an_unreadable_tokenizer_file_is_named(tmp_path):
    Tokenizer.train(make_docs(50, seed=1), vocab_size=300).save(tmp_path / "tok")
    path = tmp_path / "tok" / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:100] + b"\xff" + path.read_bytes()[100:])
    with pytest.raises(ValueError, match=f"{path}: cannot read the tokenizer"):
        Tokenizer.load(tmp_path / "tok")
    (tmp_path / "tok" / "meta.json").write_bytes(b'{"encoder": "\xfe"}')
    with pytest.raises(ValueError, match=f"{tmp_path / 'tok' / 'meta.json'}: not the tokenizer's meta data"):
        Tokenizer.load(tmp_path / "tok")
