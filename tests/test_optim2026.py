"""The nanochat-2026-07 optimizer and schedules against master's fixtures (recipe §3, §4.7, §8.3).

tests/fixtures/optim2026.pt is cut from shared/recipes/nanochat-2026-07-fixtures.pt by
tests/fixtures/make_optim2026.py. The fixture's one step is bitwise reproducible in fp32 eager on
CPU (§3.6, §8.4), so the stepped weights are compared by sha256; a tensor that differs is named with
its largest difference from this implementation's own unmodified step.
"""

import hashlib
import io
from pathlib import Path

import pytest
import torch

from snakechat.train import muon_adamw, schedules2026
from snakechat.train.muon_adamw import MuonAdamW, param_groups

FIXTURE = torch.load(Path(__file__).parent / "fixtures" / "optim2026.pt", weights_only=True)


def sha256(tensor):
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def fixture_params():
    params = {name: torch.nn.Parameter(value.clone()) for name, value in FIXTURE["state_dict"].items()}
    for name, grad in FIXTURE["grads"].items():
        params[name].grad = grad.clone()
    return params


def one_step(lr_mult=1.0, momentum=0.95, weight_decay=None, optimizer_class=MuonAdamW, edit=None):
    """The fixture's step: its state and gradients into a fresh optimizer, one step; the weights after."""
    torch.set_num_threads(1)
    params = fixture_params()
    optimizer = optimizer_class(param_groups(params.items(), FIXTURE["model_dim"], **FIXTURE["setup_optimizer_kwargs"]))
    schedules2026.apply(optimizer, lr_mult, momentum, weight_decay)
    if edit:
        edit(optimizer)
    optimizer.step()
    return {name: p.detach() for name, p in params.items()}


def differing(after, reference_sha256):
    return sorted(name for name, p in after.items() if sha256(p) != reference_sha256[name])


def test_groups_match_master_table():
    params = fixture_params()
    names = {id(p): n for n, p in params.items()}
    groups = param_groups(params.items(), FIXTURE["model_dim"], **FIXTURE["setup_optimizer_kwargs"])
    assert len(groups) == len(FIXTURE["param_groups"]) == 10
    for group, ref in zip(groups, FIXTURE["param_groups"]):
        assert group["kind"] == ref["kind"]
        assert [names[id(p)] for p in group["params"]] == ref["params"]
        assert group["lr"] == ref["lr"] == group["initial_lr"]  # doubles, exactly
        assert group["weight_decay"] == ref["weight_decay"]
        if ref["kind"] == "adamw":
            assert list(group["betas"]) == list(ref["betas"]) and group["eps"] == ref["eps"]
        else:
            assert (group["momentum"], group["beta2"], group["ns_steps"]) == (ref["momentum"], ref["beta2"], ref["ns_steps"])


def test_one_step_bitwise():
    after = one_step()
    assert differing(after, FIXTURE["params_after_step_sha256"]) == []
    for name, value in FIXTURE["params_after_step_small"].items():
        assert torch.equal(after[name], value), name


def test_step0_schedule_bitwise():
    values = FIXTURE["step0_values"]
    assert schedules2026.lr_multiplier(0, 21) == values["lr_multiplier"] == 0.025
    assert schedules2026.muon_momentum(0, 21) == values["muon_momentum"] == 0.85
    assert schedules2026.muon_weight_decay(0, 21, values["muon_weight_decay"]) == values["muon_weight_decay"]
    after = one_step(values["lr_multiplier"], values["muon_momentum"], values["muon_weight_decay"])
    assert differing(after, {n: s["sha256"] for n, s in FIXTURE["step0_summary"].items()}) == []
    for name, value in FIXTURE["step0_small_params_after"].items():
        assert torch.equal(after[name], value), name
    for name, summary in FIXTURE["step0_summary"].items():
        update = (after[name] - FIXTURE["state_dict"][name]).norm().item()
        assert update == pytest.approx(summary["update_l2"], rel=1e-6), name


class AlteredPolarExpress(MuonAdamW):
    """The first triple's c rounded to 6 digits (the coefficients enter as fp32 scalars, so a change
    below fp32's resolution, ~1e-6 here, would not show)."""
    coefficients = ((8.156554524902461, -22.48329292557795, 15.8788),) + muon_adamw.POLAR_EXPRESS[1:]


def set_muon_beta2(optimizer):
    for group in optimizer.param_groups:
        if group["kind"] == "muon":
            group["beta2"] = 0.95


def set_head_beta2(optimizer):
    optimizer.param_groups[0]["betas"] = (0.8, 0.95)


def matrices(names):
    return [n for n in names if n.startswith("blocks.")]


@pytest.mark.parametrize("change, hit", [
    (dict(optimizer_class=AlteredPolarExpress), matrices),  # one coefficient to 6 digits
    (dict(edit=set_muon_beta2), matrices),  # NorMuon beta2 0.9 -> 0.95
    (dict(edit=set_head_beta2), lambda names: ["lm_head.weight"]),  # the head's AdamW beta2 0.96 -> 0.95
])
def test_one_constant_changed_fails(change, hit):
    after = one_step(**change)
    assert differing(after, FIXTURE["params_after_step_sha256"]) == sorted(hit(after))


def test_cautious_mask_changed_fails(monkeypatch):
    def decay_everywhere(params, update, lr, weight_decay):
        params.sub_(lr * update + lr * weight_decay * params)
    monkeypatch.setattr(muon_adamw, "cautious_update", decay_everywhere)
    after = one_step()
    assert differing(after, FIXTURE["params_after_step_sha256"]) == sorted(matrices(after))


def test_torch_adamw_is_close_but_not_bitwise():
    """Why the AdamW step is written here: torch.optim.AdamW (double scalar arithmetic) on the same
    group lands within §8.4's 3e-7 but not on the fixture's bits."""
    params = fixture_params()
    reference = one_step()
    names = ["lm_head.weight", "wte.weight", "value_embeds.1.weight", "value_embeds.3.weight"]
    groups = param_groups(params.items(), FIXTURE["model_dim"], **FIXTURE["setup_optimizer_kwargs"])
    torch_groups = [dict(params=g["params"], lr=g["lr"], betas=g["betas"], eps=g["eps"], weight_decay=g["weight_decay"]) for g in groups[:3]]
    torch.optim.AdamW(torch_groups, foreach=False).step()
    diffs = {n: (params[n].detach() - reference[n]).abs().max().item() for n in names}
    assert max(diffs.values()) <= 3e-7, diffs
    assert max(diffs.values()) > 0, diffs


def test_state_dict_resume_is_bitwise():
    """Two steps in one optimizer equal one step, a save/load through torch.save (weights_only) into a
    fresh optimizer, and the second step."""
    torch.set_num_threads(1)
    kwargs = FIXTURE["setup_optimizer_kwargs"]
    straight = fixture_params()
    opt = MuonAdamW(param_groups(straight.items(), FIXTURE["model_dim"], **kwargs))
    opt.step()
    opt.step()
    resumed = fixture_params()
    opt = MuonAdamW(param_groups(resumed.items(), FIXTURE["model_dim"], **kwargs))
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    opt = MuonAdamW(param_groups(resumed.items(), FIXTURE["model_dim"], **kwargs))
    opt.load_state_dict(saved)
    opt.step()
    for name in straight:
        assert torch.equal(straight[name].detach(), resumed[name].detach()), name
    muon_state = opt.state[opt.param_groups[-1]["params"][0]]
    assert muon_state["second_moment"].shape == (4, 256, 1)  # c_fc (256, 64): tall, one value per row


def test_base_schedule_speedrun_d24():
    """§4.7 at the speedrun's d24, ratio 8: N = 5568 steps, 3619 of warm-down."""
    steps = 5568
    assert schedules2026.warmdown_steps(steps) == 3619
    assert schedules2026.lr_multiplier(0, steps) == 0.025
    assert schedules2026.lr_multiplier(39, steps) == 1.0
    assert schedules2026.lr_multiplier(1949, steps) == 1.0
    assert schedules2026.lr_multiplier(1950, steps) < 1.0
    assert schedules2026.lr_multiplier(steps - 1, steps) == pytest.approx(0.050263, abs=5e-7)
    assert schedules2026.muon_momentum(0, steps) == 0.85
    assert schedules2026.muon_momentum(200, steps) == pytest.approx(0.91)
    assert schedules2026.muon_momentum(1948, steps) == 0.97
    assert schedules2026.muon_momentum(1949, steps) == 0.97  # the warm-down branch, at p = 0
    assert schedules2026.muon_momentum(steps - 1, steps) == pytest.approx(0.97 - 0.07 * 3618 / 3619)
    # λ = 0.28 · √(B / 2^19) · N(d12) / N(d24) with B = 2^20 (§4.5; the ratio cancels)
    wd = 0.28 * 2 ** 0.5 * 110_100_912 / 729_810_624
    assert wd == pytest.approx(0.059738, abs=5e-7)
    assert schedules2026.muon_weight_decay(0, steps, wd) == wd
    assert schedules2026.muon_weight_decay(steps // 2, steps, wd) == pytest.approx(wd / 2)
    assert schedules2026.muon_weight_decay(steps - 1, steps, wd) == pytest.approx(4.75e-9, abs=5e-12)


def test_momentum_warmup_wins_in_short_runs():
    """With N − warm-down < 400 the 400-step momentum ramp is checked first, as the 40-step lr
    warm-up is (fixture model: 21 steps)."""
    steps = 21
    assert schedules2026.warmdown_steps(steps) == 14
    assert [schedules2026.muon_momentum(s, steps) for s in (0, 10, 20)] == [0.85, 0.85 * (1 - 0.025) + 0.97 * 0.025, 0.85 * 0.95 + 0.97 * 0.05]
    assert schedules2026.lr_multiplier(20, steps) == 21 / 40
    assert schedules2026.lr_multiplier(45, 50) == pytest.approx(5 / 32 + (27 / 32) * 0.05)


def test_sft_schedule():
    assert schedules2026.sft_lr_multiplier(0.0) == schedules2026.sft_lr_multiplier(0.5) == 1.0
    assert schedules2026.sft_lr_multiplier(0.75) == pytest.approx(0.5)
    assert schedules2026.sft_lr_multiplier(1.0) == 0.0
    assert schedules2026.sft_muon_momentum(0) == 0.85
    assert schedules2026.sft_muon_momentum(150) == pytest.approx(0.90)
    assert schedules2026.sft_muon_momentum(300) == schedules2026.sft_muon_momentum(5000) == 0.95


def test_groups_refuse_unknown_and_non_matrix_parameters():
    params = fixture_params()
    with pytest.raises(ValueError, match="no group for.*extra"):
        param_groups([*params.items(), ("extra", torch.nn.Parameter(torch.zeros(3)))], 64, **FIXTURE["setup_optimizer_kwargs"])
    with pytest.raises(ValueError, match="blocks.0.norm.*shape"):
        param_groups([*params.items(), ("blocks.0.norm", torch.nn.Parameter(torch.zeros(3)))], 64, **FIXTURE["setup_optimizer_kwargs"])


def test_speedrun_schedule_from_the_2026_sizing():
    """The schedules driven by snakechat.model.sizing's d24 ratio-8 speedrun (§4.8's bold row), as
    base_train drives them: its steps, warm-down and Muon λ give §4.7's last-step values."""
    from snakechat.model import sizing

    size = sizing.size_2026(24, 32768, tokens_params_ratio=8)
    steps, wd = size.num_iterations, size.weight_decay_scaled
    assert (steps, size.warmdown_steps, schedules2026.warmdown_steps(steps)) == (5568, 3619, 3619)
    assert schedules2026.lr_multiplier(steps - 1, steps, size.warmup_steps, 0.65, size.final_lr_frac) == pytest.approx(0.050263, abs=5e-7)
    assert schedules2026.muon_weight_decay(steps - 1, steps, wd) == pytest.approx(4.75e-9, abs=5e-12)
    schedule = schedules2026.BaseSchedule2026(steps=steps, weight_decay=wd, **{k: v for k, v in size.setup_optimizer_kwargs.items() if k != "weight_decay"})
    params = fixture_params()
    optimizer = MuonAdamW(param_groups(params.items(), FIXTURE["model_dim"], **schedule.setup_optimizer_kwargs()))
    assert schedule.apply([optimizer], 0) == 0.025
    muon = [g for g in optimizer.param_groups if g["kind"] == "muon"]
    assert all(g["momentum"] == 0.85 and g["weight_decay"] == wd for g in muon)
    schedule.apply([optimizer], steps - 1)
    assert all(g["lr"] == g["initial_lr"] * schedules2026.lr_multiplier(steps - 1, steps) for g in optimizer.param_groups)
    assert all(g["momentum"] == pytest.approx(0.90, abs=3e-5) and g["weight_decay"] == pytest.approx(4.75e-9, abs=5e-12) for g in muon)
