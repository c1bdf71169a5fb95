"""The 2026 recipe's sizing (snakechat.model.sizing.size_2026) against nanochat master's own derivation:
the fixture's `sizing_master_defaults` (d4-d32, ratio 12) and `derived_hyperparameters` (the fixture
model), copied into tests/nanochat_2026_sizing.json, and the spec's ratio-8 table (§4.8). Integers
exact, floats equal to double precision."""

import json
from pathlib import Path

import pytest

from snakechat.model import sizing

FIXTURE = json.loads((Path(__file__).parent / "nanochat_2026_sizing.json").read_text())


def mismatches(expected, got):
    """Fields of a fixture row that the Sizing2026 record does not reproduce exactly."""
    record = got.record()
    bad = []
    for key, want in expected.items():
        if key == "schedule":
            have = {"warmup_steps": record["warmup_steps"], "warmdown_steps": record["warmdown_steps"]}
        elif key == "window_sizes":
            want, have = [tuple(w) for w in want], [(w, 0) for w in record["window_sizes"]]
        else:
            have = record[key]
        if have != want or type(have) is not type(want) and not isinstance(want, dict):
            bad.append((key, want, have))
    return bad


def master_defaults(row, **overrides):
    return sizing.size_2026(row["depth"], row["vocab_size"], sequence_len=row["sequence_len"], **overrides)


@pytest.mark.parametrize("row", FIXTURE["sizing_master_defaults"], ids=lambda r: f"d{r['depth']}")
def test_master_defaults_every_depth(row):
    assert mismatches(row, master_defaults(row)) == []


def test_fixture_model_derivation_and_group_learning_rates():
    """The fixture's 4-layer, width-64 model (aspect 16, head_dim 32, seq 64, vocab 512), with its d12
    reference built from the same flags; the final group lrs are those of master's optimizer."""
    cfg = FIXTURE["config"]
    s = sizing.size_2026(cfg["n_layer"], cfg["vocab_size"], sequence_len=cfg["sequence_len"], aspect_ratio=16, head_dim=32)
    assert mismatches(FIXTURE["derived_hyperparameters"], s) == []
    first_param = {"lm_head.weight": "lm_head", "transformer.wte.weight": "wte", "value_embeds.1.weight": "value_embeds",
                   "resid_lambdas": "resid_lambdas", "x0_lambdas": "x0_lambdas", "smear_gate.weight": "smear"}
    for group in FIXTURE["param_groups"]:
        name = first_param.get(group["params"][0], "muon")
        assert s.group_lrs[name] == group["lr"], (name, s.group_lrs[name], group["lr"])
        if group["kind"] == "muon":
            assert s.weight_decay_scaled == group["weight_decay"]


# §4.8, ratio 8: depth -> (target tokens, steps, tokens trained, warm-down steps, train FLOPs to 3 figures)
RATIO_8 = {
    4: (92_275_072, 352, 92_274_688, 229, 7.40e15),
    8: (335_545_856, 1280, 335_544_320, 832, 9.92e16),
    12: (880_807_296, 1680, 880_803_840, 1092, 6.69e17),
    16: (1_879_054_336, 3584, 1_879_048_192, 2330, 2.98e18),
    20: (3_481_281_920, 3320, 3_481_272_320, 2158, 1.00e19),
    24: (5_838_484_992, 5568, 5_838_471_168, 3619, 2.79e19),
    26: (7_347_388_256, 7007, 7_347_372_032, 4555, 4.40e19),
    32: (13_421_797_376, 6400, 13_421_772_800, 4160, 1.45e20),
}


def ratio_8_row(depth):
    s = sizing.size_2026(depth, 32768, tokens_params_ratio=8)
    return s.target_tokens, s.num_iterations, s.tokens, s.warmdown_steps, float(f"{s.total_flops:.2e}")


@pytest.mark.parametrize("depth", sorted(RATIO_8))
def test_spec_ratio_8_table(depth):
    assert ratio_8_row(depth) == RATIO_8[depth]


def test_the_speedrun_d24_at_ratio_8():
    """§6.3: B = 2^20 (4 micro-steps of 16 × 2048 on 8 GPUs), 5568 steps, Muon WD 0.0597384, the §4.4 lrs;
    batch size and weight decay do not depend on the ratio."""
    s = sizing.size_2026(24, 32768, tokens_params_ratio=8)
    twelve = sizing.size_2026(24, 32768)
    assert (s.n_embd, s.n_head, s.params_total, s.scaling_params) == (1536, 12, 1_384_122_122, 729_810_624)
    assert s.total_batch_size == 2**20 == twelve.total_batch_size
    assert s.weight_decay_scaled == twelve.weight_decay_scaled and round(s.weight_decay_scaled, 7) == 0.0597384
    assert sizing.grad_accum_steps(s.total_batch_size, 16, 2048, 8) == 4
    assert s.flops_per_token == 4_775_225_616 and s.window_sizes.count(512) == 18
    assert {k: round(v, 7) for k, v in s.group_lrs.items()} == {
        "lm_head": 0.008, "wte": 0.3, "value_embeds": 0.15, "resid_lambdas": 0.0070711, "x0_lambdas": 0.7071068, "smear": 0.2, "muon": 0.0282843}


def test_one_changed_constant_fails(monkeypatch):
    """The comparisons above catch one constant changed: the default ratio 12 -> 10.5 moves every
    horizon; the batch exponent 0.383 -> 0.38 moves d32's batch size from 2^21 to 2^20 (its log2 lies
    near a rounding boundary), and with it its steps, learning rates and weight decay."""
    rows = FIXTURE["sizing_master_defaults"]
    assert all(mismatches(r, master_defaults(r, tokens_params_ratio=10.5)) for r in rows)
    monkeypatch.setattr(sizing, "BATCH_EXPONENT_2026", 0.38)
    failing = [r["depth"] for r in rows if mismatches(r, master_defaults(r))]
    assert failing == [32]
    assert [d for d in RATIO_8 if ratio_8_row(d) != RATIO_8[d]] == [32]


def test_steps_precedence_num_iterations_then_target_flops_then_ratio():
    by_ratio = sizing.size_2026(12, 32768)
    fpt, batch = by_ratio.flops_per_token, by_ratio.total_batch_size
    by_flops = sizing.size_2026(12, 32768, target_flops=1000.4 * fpt * batch)
    assert by_flops.num_iterations == 1000 and by_flops.total_flops == 1000 * fpt * batch
    assert sizing.size_2026(12, 32768, target_flops=1e18, num_iterations=7).num_iterations == 7
    # the batch size and weight decay stay the ratio's (base_train derives them before the steps)
    assert (by_flops.total_batch_size, by_flops.weight_decay_scaled) == (batch, by_ratio.weight_decay_scaled)
    with pytest.raises(ValueError, match="trains for 0 steps"):
        sizing.size_2026(4, 32768, target_flops=1.0)


def test_windows_and_their_errors():
    """§1.5: the short window is a quarter of the context rounded up to 128; the last layer is always long."""
    shorts = {s: sizing.window_sizes(2, s, "S")[0] for s in (64, 1000, 1024, 2048, 2049, 4096)}
    assert shorts == {64: 128, 1000: 256, 1024: 256, 2048: 512, 2049: 640, 4096: 1024}
    assert sizing.window_sizes(3, 2048, "s") == [512, 512, 2048]
    assert sizing.window_sizes(26, 2048)[-3:] == [2048, 512, 2048]
    with pytest.raises(ValueError, match="'SXL' may hold only S and L"):
        sizing.window_sizes(4, 2048, "sxl")
