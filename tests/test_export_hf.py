"""The transformers export: a base checkpoint trained by base_train and an SFT checkpoint trained
from it, exported and loaded back with transformers, must compute, generate, tokenize, render chats
and score CORE exactly as snakechat does; what NanoChat cannot express is refused."""

import csv
import json
import sys

import pytest
import torch

from snakechat import export_hf
from snakechat.export import hf_mapping
from snakechat.world import corpus as world_corpus
from snakechat.model.checkpoint import load_model, sealed
from snakechat.model.conversation import render_conversation, render_for_completion
from snakechat.model.engine import Engine
from snakechat.model.gpt import norm
from snakechat.runtime.provenance import hash_file
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from world_dataset import write_world_dataset

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'snakechat[hf]')")

MIXTURE = {"world_chat": {"weight": 200}, "arithmetic_tool": {"weight": 60}, "identity": {"weight": 60}, "world_mc": {"weight": 60}}
SEQUENCE_LEN = 512

MIXED_TEXTS = [
    "Ünïcödé: naïve café, Straße, 日本語のテキスト, Ελληνικά, emoji 🐍🚀👩‍👩‍👧 and a combining e\u0301.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n",
    "Digits 0 7 42 123 4567 89012 3.14159 -2.5e-10 1,000,000 2024-12-31 0x1F 007",
    "whitespace   runs\t\ttabs\n\n\n  indented\r\nwindows line   \u00a0nbsp\u3000ideographic     ",
    "{\"json\": [1, 2, {\"k\": null}], 'quote': \"it's\"} <html><br/></html> a&&b||c !== d; x->y",
    "",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A base model trained by base_train on the built-in world (GQA: 2 query heads, 1 kv head, 512
    positions), an SFT model trained from it by chat_sft, and both exported."""
    from snakechat import base_train, chat_sft
    from snakechat.world import chat as world_chat

    root = tmp_path_factory.mktemp("export")
    write_world_dataset(root)
    base_train.main([
        "--manifest", str(root / "manifest.json"), "--tokenizer", str(root / "tok"), "--out", str(root / "base"),
        "--state", str(root / "state_base"), "--depth", "2", "--aspect-ratio", "32", "--head-dim", "32", "--n-kv-head", "1",
        "--sequence-len", str(SEQUENCE_LEN), "--device-batch-rows", "2", "--step-tokens", "1024", "--steps", "60",
        "--eval-every", "0", "--eval-tokens", "1024", "--log-every", "20", "--save-every", "0", "--compile", "false", "--device", "cpu",
    ])
    world_chat.write_chat_data(root / "chat", 0)
    chat_sft.main([
        "--start", str(root / "base"), "--chat-data", str(root / "chat"), "--out", str(root / "sft"), "--state", str(root / "state_sft"),
        "--mixture", json.dumps(MIXTURE), "--steps", "30", "--device-batch-rows", "4", "--step-conversations", "8", "--sequence-len", "128",
        "--lr-mult", "1.0", "--eval-every", "0", "--eval-conversations", "8", "--save-every", "0", "--device", "cpu",
    ])
    for stage in ("base", "sft"):
        export_hf.main(["--checkpoint", str(root / stage), "--out", str(root / "hf" / stage)])
    return root


def loaded(root, stage):
    model, tok, _ = load_model(root / stage)
    hf = transformers.AutoModelForCausalLM.from_pretrained(root / "hf" / stage, dtype=torch.float32).eval()
    return model.eval(), tok, hf


@pytest.mark.parametrize("stage", ["base", "sft"])
def test_the_folder_is_a_nanochat_model_with_its_tokenizer(trained, stage):
    out = trained / "hf" / stage
    assert {p.name for p in out.iterdir()} == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                               "tokenizer_config.json", export_hf.EXPORT_META}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "nanochat" and config["architectures"] == ["NanoChatForCausalLM"]
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["max_position_embeddings"]) == (2, 1, SEQUENCE_LEN)
    assert config["rms_norm_eps"] == torch.finfo(torch.float32).eps and config["final_logit_softcapping"] == 15.0
    meta = json.loads((out / export_hf.EXPORT_META).read_text())
    assert meta["checkpoint"] == str(trained / stage) and meta["verification"]["max_abs_logit_diff"] <= 1e-4
    assert {"config", "config_hash", "inputs", "code_fingerprint", "git_commit"} <= set(meta["provenance"])
    assert set(meta["provenance"]["inputs"]) == {str(trained / stage), str(trained / stage / "tokenizer")}  # the checkpoint's own copy
    from snakechat.runtime.provenance import hash_file
    assert meta["files"] == {p.name: hash_file(p) for p in out.iterdir() if p.name != export_hf.EXPORT_META}


@pytest.mark.parametrize("stage", ["base", "sft"])
def test_logits_equal_snakechat_on_512_tokens(trained, stage):
    model, tok, hf = loaded(trained, stage)
    text = "\n".join(world_corpus.corpus_documents(7, 40))
    ids = torch.tensor([tok.encode(text, prepend=tok.bos_id)[:SEQUENCE_LEN]])
    assert ids.shape == (1, SEQUENCE_LEN)
    with torch.no_grad():
        ours, theirs = model(ids), hf(input_ids=ids).logits
    assert ours.dtype == theirs.dtype == torch.float32
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert ours[0, -1].std() > 0.5  # a trained model: logits far from uniform, so equality means something


@pytest.mark.parametrize("stage", ["base", "sft"])
def test_greedy_generation_of_32_tokens_is_identical(trained, stage):
    """HF's generate against snakechat's engine, greedy, up to 32 tokens; a reply may end earlier at a
    stop token (<|assistant_end|> or <|bos|>), which both must then produce at the same step."""
    model, tok, hf = loaded(trained, stage)
    engine = Engine(model, tok)
    if stage == "base":
        prompts = [tok.encode(doc[:40], prepend=tok.bos_id) for doc in world_corpus.corpus_documents(11, 3)]
    else:
        questions = ("Where does Lucy Fisher live?", "Who are you?", "What is the favourite colour of Tom Baker?", "Tell me about Ashford.")
        prompts = [render_for_completion(tok, [{"role": "user", "content": q}]) for q in questions]
    stops = {tok.special_id("<|assistant_end|>"), tok.bos_id}
    lengths = []
    for prompt in prompts:
        ours = [column[0] for column, _ in engine.generate(prompt, temperature=0.0, max_tokens=32)]
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=32, do_sample=False)
        theirs = out[0, len(prompt):].tolist()
        end = next((i + 1 for i, t in enumerate(theirs) if t in stops), len(theirs))  # HF pads after the stop
        assert ours == theirs[:end], tok.decode(prompt)
        assert tok.special_id("<|python_end|>") not in ours  # no calculator call, which only snakechat's engine answers
        lengths.append(len(ours))
    if stage == "base":
        assert lengths == [32] * len(prompts)
    else:
        assert sum(lengths) >= 32 and all(n > 1 for n in lengths)


def test_tokenizer_gives_snakechat_ids_on_mixed_text(trained):
    _, tok, _ = loaded(trained, "sft")
    hf_tok = transformers.AutoTokenizer.from_pretrained(trained / "hf" / "sft")
    for text in MIXED_TEXTS:
        ids = tok.encode(text)
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids, text
        assert hf_tok(text)["input_ids"] == [tok.bos_id] + ids, text
        assert hf_tok.decode(ids) == tok.decode(ids) == text
    assert hf_tok.bos_token == "<|bos|>" and hf_tok.eos_token == "<|assistant_end|>"
    assert hf_tok.decode(render_conversation(tok, [{"role": "user", "content": "hi"}])[0], skip_special_tokens=True) == "hi"


def test_chat_template_renders_snakechat_tokens(trained):
    _, tok, _ = loaded(trained, "sft")
    hf_tok = transformers.AutoTokenizer.from_pretrained(trained / "hf" / "sft")
    conversations = [
        [{"role": "system", "content": "You are a terse assistant.\nAnswer in one line."},
         {"role": "user", "content": "What is 6 × 7?  Ünïcödé 🐍"},
         {"role": "assistant", "content": "It is 42."},
         {"role": "user", "content": "And   in code?\n\tdef f(): return 6*7"},
         {"role": "assistant", "content": [{"type": "text", "text": "Checking: "}, {"type": "python", "text": "6*7"},
                                           {"type": "python_output", "text": "42"}, {"type": "text", "text": " so 42."}]},
         {"role": "user", "content": [{"type": "text", "text": "Thanks "}, {"type": "text", "text": "a lot!"}]}],
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": ""}, {"role": "user", "content": ""}],
    ]
    for conversation in conversations:
        for three_turns in (conversation[:4], conversation):
            expected = render_conversation(tok, three_turns)[0]
            assert hf_tok.apply_chat_template(three_turns, tokenize=True, return_dict=True)["input_ids"] == expected
            if three_turns[-1]["role"] == "user":
                got = hf_tok.apply_chat_template(three_turns, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
                assert got == render_for_completion(tok, three_turns)
    for bad, says in (([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], r"message 1 \(system\): expected an assistant message"),
                      ([{"role": "system", "content": "b"}], "must be followed by a user message"),
                      ([{"role": "assistant", "content": "a"}], r"message 0 \(assistant\): expected a user message"),
                      ([{"role": "user", "content": [{"type": "python", "text": "1+1"}]}], "user content can only be text")):
        with pytest.raises(ValueError):
            render_conversation(tok, bad)
        with pytest.raises(Exception, match=says):
            hf_tok.apply_chat_template(bad, tokenize=False)


def test_base_eval_on_the_export_writes_the_same_core_csv(trained, tmp_path):
    """Both scored in fp32, where the export is exact (bf16 rounds the two models' different op orders differently)."""
    from snakechat import base_eval
    from snakechat.evaluate import core_bundle
    from snakechat.world import bundle as world_bundle

    bundle = tmp_path / "bundle"
    world_bundle.write_bundle(bundle, 0)
    core_bundle.write_source(bundle)  # as the eval_bundle stage does
    rows = {}
    for flag, path in (("--checkpoint", trained / "base"), ("--hf-path", trained / "hf" / "base")):
        out = tmp_path / f"{flag.strip('-')}.csv"
        base_eval.main([flag, str(path), "--bundle", str(bundle), "--out", str(out), "--max-per-task", "12", "--device", "cpu", "--precision", "fp32"])
        with open(out, newline="") as f:
            rows[flag] = [{k: r[k] for k in ("label", "type", "shots", "n", "accuracy", "centered")} for r in csv.DictReader(f)]
    assert rows["--checkpoint"] == rows["--hf-path"]
    assert len(rows["--checkpoint"]) > 5 and any(float(r["accuracy"]) > 0 for r in rows["--checkpoint"][:-1])


def test_rms_norm_epsilon_is_snakechats():
    """At small activations the epsilon decides the result: 2^-23 (float32's) reproduces F.rms_norm, NanoChat's default 1e-6 does not."""
    from transformers.models.nanochat.modeling_nanochat import NanoChatRMSNorm

    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 1e-4
    assert torch.allclose(NanoChatRMSNorm(eps=hf_mapping.RMS_NORM_EPS)(x), norm(x), rtol=1e-6, atol=0)
    assert not torch.allclose(NanoChatRMSNorm(eps=1e-6)(x), norm(x), rtol=1e-2, atol=0)


def save_weights(ckpt, state):
    """Replace a checkpoint's weights as a stage would write them: with their sha256 in meta.json."""
    torch.save(state, ckpt / "model.pt")
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["sha256"]["model.pt"] = hash_file(ckpt / "model.pt")
    (ckpt / "meta.json").write_text(json.dumps(sealed(meta)))


def test_refuses_what_nanochat_cannot_express(tmp_path):
    from tiny_chat_model import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "ckpt", tmp_path / "tok")
    out = tmp_path / "hf"
    export_hf.export(ckpt, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    weights = (ckpt / "model.pt").read_bytes()
    (ckpt / "model.pt").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))  # one bit flipped
    with pytest.raises(SystemExit, match="model.pt is corrupt or was changed"):
        export_hf.main(["--checkpoint", str(ckpt), "--out", str(out)])
    (ckpt / "model.pt").write_bytes(weights)

    meta = json.loads((ckpt / "meta.json").read_text())
    meta["model_config"]["window_pattern"] = "SSSL"  # sliding-window layers: NanoChat attends to everything
    (ckpt / "meta.json").write_text(json.dumps(sealed(meta)))
    with pytest.raises(SystemExit, match="'window_pattern' have no counterpart in NanoChatForCausalLM"):
        export_hf.main(["--checkpoint", str(ckpt), "--out", str(out)])
    meta["model_config"]["recipe"] = "nanochat-2026-07"
    (ckpt / "meta.json").write_text(json.dumps(sealed(meta)))
    with pytest.raises(SystemExit, match="a nanochat-2026-07 model has value embeddings and their gates, sliding-window attention, smear, backout"):
        export_hf.main(["--checkpoint", str(ckpt), "--out", str(out)])
    del meta["model_config"]["window_pattern"], meta["model_config"]["recipe"]
    (ckpt / "meta.json").write_text(json.dumps(sealed(meta)))

    state = torch.load(ckpt / "model.pt", weights_only=True)
    state["resid_lambdas"] = torch.ones(2)  # per-layer residual scalars: NanoChat has none
    save_weights(ckpt, state)
    with pytest.raises(export_hf.ExportError, match="'resid_lambdas' have no counterpart"):
        export_hf.export(ckpt, out)
    del state["resid_lambdas"]
    state["blocks.0.mlp.c_fc.weight"] = torch.zeros(3 * 32, 32)  # a 3x MLP: the config has no say in NanoChat's 4x
    save_weights(ckpt, state)
    with pytest.raises(export_hf.ExportError, match=r"'blocks.0.mlp.c_fc.weight' has shape \(96, 32\), expected \(128, 32\)"):
        export_hf.export(ckpt, out)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "hf", "tok"]  # no temporary folder left behind


def test_without_transformers_it_says_how_to_get_it(tmp_path, monkeypatch):
    from tiny_chat_model import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "ckpt", tmp_path / "tok")
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(SystemExit, match=r"needs transformers .*pip install 'snakechat\[hf\]'"):
        export_hf.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")])
    assert not (tmp_path / "hf").exists()
