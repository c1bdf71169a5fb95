"""The 2026 model (recipe nanochat-2026-07) against nanochat's own numbers.

tests/nanochat_2026_fixtures.pt holds keys of shared/recipes/nanochat-2026-07-fixtures.pt, made by
nanochat 92d63d4 on CPU in float32 (torch 2.13.0, one thread). The spec (§8.4) says the reference
reproduces itself bit for bit between runs and thread counts, and an implementation with the same op
order matched it bitwise; so every comparison here is bitwise (torch.equal, or the sha256 of the
raw bytes where the fixture keeps a hash), level 1 of §8.4. Another torch build or CPU ISA may move
low bits; then the §8.4 level-2 tolerances (logits 2e-6, loss 1e-6, grads 1e-5 of max |g|) apply.
"""

import hashlib
from pathlib import Path

import pytest
import torch

from snakechat.model import recipes, sizing
from snakechat.model.checkpoint import load_gpt, save_checkpoint
from snakechat.model.engine import Engine, KVCache
from snakechat.model.precision import for_inference
from snakechat.model.gpt2026 import GPT2026, GPT2026Config, window_sizes
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from tiny_chat_model import tokenizer

FIXTURES = torch.load(Path(__file__).with_name("nanochat_2026_fixtures.pt"), weights_only=True)


def snakechat_name(master_name):
    return master_name.replace("transformer.wte.", "wte.").replace("transformer.h.", "blocks.")


def sha256(t):
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def fixture_model(config=None):
    model = GPT2026(GPT2026Config(**(config or FIXTURES["config"])))
    model.load_state_dict({snakechat_name(k): v for k, v in FIXTURES["state_dict"].items()})
    return model


def naive_greedy(model, prompt, steps):
    """Greedy tokens by a full forward of the growing sequence at every step (no cache)."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def test_shape_counts_and_flops():
    model = fixture_model()
    assert model.windows == [w for w, _ in FIXTURES["window_sizes"]]
    assert [b.attn.ve_gate is not None for b in model.blocks] == FIXTURES["has_ve"]
    assert sorted(n for n, _ in model.named_parameters()) == sorted(snakechat_name(k) for k in FIXTURES["state_dict"])
    assert model.num_params() == FIXTURES["params"]["total"]
    assert model.num_scaling_params() == FIXTURES["scaling_params"]
    assert model.flops_per_token() == FIXTURES["flops_per_token"]
    assert window_sizes(2048, 4, "sssl") == [512, 512, 512, 2048]  # the short window: a quarter, rounded up to 128
    assert window_sizes(2049, 3, "L") == [2049] * 3 and window_sizes(1000, 2, "S") == [256, 1000]
    with pytest.raises(ValueError, match="S and L"):
        window_sizes(64, 2, "SX")


def test_forward_losses_and_every_gradient_are_bitwise():
    model = fixture_model()
    with torch.no_grad():
        assert torch.equal(model(FIXTURES["idx"]), FIXTURES["logits"])
        assert torch.equal(model(FIXTURES["idx"], FIXTURES["targets"], loss_reduction="none"), FIXTURES["per_token_loss"])
        assert torch.equal(model(FIXTURES["idx"], FIXTURES["targets_masked"]), FIXTURES["loss_masked"])
    loss = model(FIXTURES["idx"], FIXTURES["targets"])
    assert torch.equal(loss.detach(), FIXTURES["loss"])
    loss.backward()
    grads = {snakechat_name(k): v for k, v in FIXTURES["grads"].items()}
    assert len(grads) == 35
    differ = [name for name, p in model.named_parameters() if not torch.equal(p.grad, grads[name])]
    assert differ == []


def test_seed_42_init_is_the_reference_init():
    torch.manual_seed(42)
    model = GPT2026(GPT2026Config(**FIXTURES["config"]))
    expected = {snakechat_name(k): v for k, v in FIXTURES["init_sha256"].items()}
    assert {name: sha256(p) for name, p in model.named_parameters()} == expected


def test_case_b_windows_per_token_loss_and_gradients():
    """Sequence 256 with a 128 window: the windows matter (and the mean loss alone would not show it)."""
    b = FIXTURES["case_B"]
    model = fixture_model(b["config"])
    assert model.windows == [w for w, _ in b["window_sizes"]]
    with torch.no_grad():
        logits = model(b["idx"])
        assert sha256(logits) == b["logits_sha256"]
        assert torch.equal(logits[:, -1], b["logits_last_position"])
        assert torch.equal(model(b["idx"], b["targets"], loss_reduction="none"), b["per_token_loss"])
    loss = model(b["idx"], b["targets"])
    assert torch.equal(loss.detach(), b["loss"])
    loss.backward()
    names = {snakechat_name(k): k for k in b["grad_summary"]}
    assert {n: sha256(p.grad) for n, p in model.named_parameters()} == {n: b["grad_summary"][k]["sha256"] for n, k in names.items()}
    full = fixture_model({**b["config"], "window_pattern": "L"})
    with torch.no_grad():
        assert torch.equal(full(b["idx"], b["targets"]), b["loss_window_pattern_L"])


def test_changing_one_piece_breaks_the_comparison():
    """An off-by-one window, or a nudged smear gate, and the fixture comparison fails."""
    b = FIXTURES["case_B"]
    model = fixture_model(b["config"])
    model.blocks[0].attn.window = 129
    with torch.no_grad():
        per_token = model(b["idx"], b["targets"], loss_reduction="none")
    assert not torch.equal(per_token, b["per_token_loss"])
    diff = (per_token - b["per_token_loss"]).abs()
    assert diff[:, :129].max() < 1e-6 < 1e-4 < diff[:, 129:].max()  # position 129 is the first to see one key more
    model = fixture_model()
    with torch.no_grad():
        model.smear_gate.weight[0, 0] += 1e-3
        assert not torch.equal(model(FIXTURES["idx"]), FIXTURES["logits"])


@pytest.fixture(scope="module")
def tok():
    return tokenizer()  # its special ids (0-8) are none of the fixtures' greedy tokens


def engine_tokens(engine, prompt, rows, steps):
    columns = [column for column, _ in engine.generate(prompt, num_samples=rows, max_tokens=steps, temperature=0.0)]
    return [list(r) for r in zip(*columns)]


def test_greedy_generation_naive_and_kv_engine_case_a(tok):
    g = FIXTURES["generate_A"]
    model = fixture_model().eval()
    assert naive_greedy(model, g["prompt"], 16) == g["naive_generate"]
    engine = Engine(model, tok)
    assert engine_tokens(engine, g["prompt"], 1, 16) == [g["engine_kv_1row"]]
    assert engine_tokens(engine, g["prompt"], 2, 16) == g["engine_kv_2rows"]


def test_greedy_generation_past_the_window_case_b(tok):
    b = FIXTURES["case_B"]
    model = fixture_model(b["config"]).eval()
    prompt = b["generate"]["prompt"]
    expected = b["generate"]["naive_generate"]
    assert len(prompt) > model.windows[0] + 1
    assert naive_greedy(model, prompt, 16) == expected
    engine = Engine(model, tok)
    assert engine_tokens(engine, prompt, 2, 16) == [expected, expected]
    (tokens, _), (short, _) = engine.generate_many([prompt, prompt[:150]], max_tokens=16, temperature=0.0)
    assert tokens == expected  # the longer prompt's tail goes through one-token decode steps
    assert short == naive_greedy(model, prompt[:150], 16)


@pytest.mark.parametrize("windowed", [True, False], ids=["window-sized cache", "full cache"])
def test_cache_chunks_smear_across_their_boundary(windowed):
    """A chunk fed into a non-empty cache smears its first token with the cached one, as training
    does; a window-sized cache keeps only each layer's window and computes the same."""
    b = FIXTURES["case_B"]
    model = fixture_model(b["config"]).eval()
    ids = b["idx"][:1, :200]
    c = model.config
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(1, c.n_layer, c.n_kv_head, c.n_embd // c.n_head, 8, model.windows if windowed else None)
        pieces = [model(ids[:, :150], kv_cache=cache), model(ids[:, 150:180], kv_cache=cache)]
        pieces += [model(ids[:, t:t + 1], kv_cache=cache) for t in range(180, 200)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=2e-6, rtol=0)
    held = [cache.cached_positions(i) for i in range(c.n_layer)]
    assert held == ([128, 128, 128, 200] if windowed else [200] * 4)


def test_checkpoint_round_trip_and_unknown_recipe(tmp_path):
    model = fixture_model()
    meta = {"model_config": model.config.to_dict()}
    assert meta["model_config"]["recipe"] == recipes.NANOCHAT_2026
    save_checkpoint(tmp_path / "ckpt", model, meta)
    loaded, loaded_meta = load_gpt(tmp_path / "ckpt")
    assert isinstance(loaded, GPT2026) and loaded.config == model.config and loaded_meta["model_config"] == meta["model_config"]
    with torch.no_grad():
        assert torch.equal(loaded(FIXTURES["idx"]), FIXTURES["logits"])
    save_checkpoint(tmp_path / "future", model, {**meta, "model_config": {**meta["model_config"], "recipe": "nanochat-2027-01"}})
    with pytest.raises(recipes.UnknownRecipe, match=r"future/meta.json model_config\['recipe'\]: unknown recipe 'nanochat-2027-01'"):
        load_gpt(tmp_path / "future")


def test_bf16_autocast_runs_with_float32_weights():
    model = fixture_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(FIXTURES["idx"], FIXTURES["targets"])
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert abs(loss.item() - FIXTURES["loss"].item()) < 0.05


def test_sizing_counts_the_recipe_model():
    """The plan's and MFU's FLOPs: d24 at master's defaults has 4,775,225,616 FLOPs per token (§1.7)."""
    d24 = sizing.size(24, 32768, 2048, aspect_ratio=64, head_dim=128, n_kv_head=0, width=0, step_tokens=0, steps=0,
                      tokens_params_ratio=20, recipe=recipes.NANOCHAT_2026)
    assert d24.flops_per_token == 4_775_225_616
    assert d24.model_config().recipe == recipes.NANOCHAT_2026 and "recipe" not in d24.record()
    assert sizing.size(24, 32768, 2048, 64, 128, 0, 0, 0, 0, 20).flops_per_token != d24.flops_per_token


def test_bf16_inference_engine(tok):
    """Under precision.for_inference (bf16 matmul weights) the engine decodes with a bf16 cache."""
    model = for_inference(fixture_model().eval(), "bf16")
    engine = Engine(model, tok, precision="bf16")
    cache = engine._new_cache(1, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(FIXTURES["idx"][:1, :8], kv_cache=cache)
    assert logits.dtype == torch.float32 and cache.recent[0][0].dtype == torch.bfloat16
    rows = engine_tokens(engine, FIXTURES["generate_A"]["prompt"], 2, 16)
    assert len(rows[0]) == 16 and rows[0] == rows[1]


def test_chat_eval_scores_a_2026_checkpoint(tmp_path, tok):
    """A stage that loads a checkpoint (chat_eval: generation and multiple choice) takes the 2026 model from it."""
    from snakechat import chat_eval
    from test_chat_eval import write_chat_data

    tok.save(tmp_path / "tok")
    torch.manual_seed(0)
    model = GPT2026(GPT2026Config(sequence_len=128, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_kv_head=2, n_embd=64))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    save_checkpoint(tmp_path / "sft", model, {"model_config": model.config.to_dict(), "tokenizer": str(tmp_path / "tok"), "step": 0})
    out = tmp_path / "sft.csv"
    chat_eval.main(["--checkpoint", str(tmp_path / "sft"), "--chat-data", str(write_chat_data(tmp_path / "chat")), "--out", str(out),
                    "--max-per-task", "2", "--max-new-tokens", "8", "--precision", "fp32"])
    rows = out.read_text().splitlines()
    assert rows[-1].startswith("ChatCORE,") and len(rows) == 5
