"""The nanochat-2025-11 recipe against nanochat b399e43's own numbers.

tests/fixtures/nanochat-2025-11.pt holds the keys read here of nanochat-2025-11-fixtures.pt (see
its note, recipes/nanochat-2025-11.md in the shared reference material): b399e43's seeded init of a
4-layer width-64 model, three base_train steps from it (batches, raw gradients, clip norms, lr
multipliers, momenta, the weights after each step), a forward/backward, the SFT and mid losses on
batches its builders made, and its per-step lr and momentum tables of base, mid, SFT and RL.
Computed on CPU in float32 with torch 2.13.0 (AVX2); the bitwise checks assume the same kernels.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from snakechat.export.hf_mapping import flip_second_halves
from snakechat.model import sizing
from snakechat.model.gpt import GPT, GPTConfig
from snakechat.train import chat_stage
from snakechat.train.optim import Schedule, build_optimizers, lr_multiplier, muon_momentum, optimizer_step
from snakechat.chat_rl import RLSettings
from snakechat.chat_sft import SFTSettings
from snakechat.mid_train import MidSettings
from snakechat.runtime.settings import parse

FIXTURES = torch.load(Path(__file__).parent / "fixtures" / "nanochat-2025-11.pt", weights_only=True)
CONFIG = GPTConfig(**FIXTURES["config"])
HEAD_DIM = CONFIG.n_embd // CONFIG.n_head
ROTATED = ("attn.c_q.weight", "attn.c_k.weight")
BASE = dict(steps=1000, warmdown_frac=0.2, momentum_warmup=300, newton_schulz="nanochat")  # base_train at the script's defaults, num_iterations 1000


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ours(name):
    return name.replace("transformer.wte", "wte").replace("transformer.h.", "blocks.")


def as_ours(state):
    return {ours(k): v.clone() for k, v in state.items()}


def base_lrs():
    """base_train's learning rates at the fixture's width, as snakechat's base_train computes them."""
    scale = sizing.adamw_lr_scale(CONFIG.n_embd)
    return dict(matrix_lr=0.02, embedding_lr=0.2 * scale, unembedding_lr=0.004 * scale)


def reference_rotation(model, state):
    """The model with b399e43's rotation: c_q/c_k second halves negated (it rotates by -θ) and its
    bf16 cos/sin tables."""
    model.load_state_dict({k: flip_second_halves(v, HEAD_DIM) if k.endswith(ROTATED) else v for k, v in as_ours(state).items()})
    rows = model.cos.size(1)
    model.cos.copy_(FIXTURES["rotary"]["cos"][:, :rows].float())
    model.sin.copy_(FIXTURES["rotary"]["sin"][:, :rows].float())
    return model


def test_seeded_init_is_b399e43s():
    """GPT.build with seed 42 draws b399e43's initial weights, every tensor bitwise."""
    model = GPT.build(CONFIG, "cpu", 42)
    state = model.state_dict()
    for name, expected in FIXTURES["state_dict"].items():
        assert torch.equal(state[ours(name)], expected), name
    assert not model.lm_head.weight.any() and not model.blocks[0].mlp.c_proj.weight.any()


def test_forward_and_backward_match_b399e43():
    """At the state before step 2 on its batch: logits bitwise, loss, per-token loss and every
    gradient within the CPU loss's rounding (note §7: 5e-7, 3e-8; per token a few ulps)."""
    step = FIXTURES["steps"][2]
    model = reference_rotation(GPT(CONFIG), FIXTURES["steps"][1]["params_after"])
    idx, targets = step["idx"].long(), step["targets"]
    with torch.no_grad():
        assert torch.equal(model(idx), FIXTURES["logits"])
        assert (model(idx, targets, loss_reduction="none") - FIXTURES["per_token_loss"]).abs().max() < 4e-6  # a few ulps at ~6
    loss = model(idx, targets)
    assert abs(loss.item() - FIXTURES["loss"].item()) < 5e-7
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name, expected in step["grads"].items():
        got = grads[ours(name)]
        if name.endswith(ROTATED):
            got = flip_second_halves(got, HEAD_DIM)
        assert (got - expected).abs().max() < 3e-8, name


def teacher_forced(schedule):
    """Each of b399e43's three base_train steps with its raw gradients, from its weights before the
    step, through snakechat's optimizers and optimizer_step (state carried over from step to step).
    Yields (fixture step, (lr multiplier, momentum, grad norm), the weights after)."""
    model = GPT(CONFIG)
    optimizers = build_optimizers(model, schedule, "fp32")
    params = dict(model.named_parameters())
    before = FIXTURES["state_dict"]
    for k, step in enumerate(FIXTURES["steps"]):
        with torch.no_grad():
            for name, value in before.items():
                params[ours(name)].copy_(value)
        for name, grad in step["grads"].items():
            params[ours(name)].grad = grad.clone()
        mult, norm = optimizer_step(model, optimizers, schedule, k)
        momentum = optimizers[1].param_groups[0]["momentum"]  # what the step set on Muon
        yield step, (mult, momentum, norm), {name: p.detach().clone() for name, p in params.items()}
        before = step["params_after"]


def test_three_base_steps_are_bitwise_b399e43s():
    """Clip norm, lr multiplier, momentum, lrs of every group and all 26 weights after each step, bitwise."""
    schedule = Schedule(**base_lrs(), **BASE)
    for step, (mult, momentum, norm), after in teacher_forced(schedule):
        assert norm.item() == step["grad_norm"].item()
        assert mult == step["lr_multiplier"] and momentum == step["muon_momentum"]
        for name, expected in step["params_after"].items():
            assert torch.equal(after[ours(name)], expected), (len(step["lrs"]), name)


def test_initial_lrs_are_b399e43s():
    """base_train's lrs at width 64 and each chat stage's (× lr_mult), bitwise as b399e43 sets them."""
    adamw, muon = FIXTURES["steps"][0]["lrs"]
    lrs = base_lrs()
    assert [lrs["unembedding_lr"], lrs["embedding_lr"]] == adamw and [lrs["matrix_lr"]] * 2 == muon
    start = SimpleNamespace(lrs=lrs)
    for cls, stage in ((MidSettings, "mid_train"), (SFTSettings, "chat_sft"), (RLSettings, "chat_rl")):
        s = SimpleNamespace(**{k: v.default for k, v in cls.__dataclass_fields__.items() if k in (
            "lr_mult", "weight_decay", "warmdown_frac", "grad_clip", "newton_schulz", "eval_every", "save_every", "log_every", "seed")})
        sched = chat_stage.schedule(s, start, 10, "linear")
        expected = FIXTURES["schedules"][stage]["initial_lrs"]
        assert [sched.unembedding_lr, sched.embedding_lr] == expected["adamw"] and sched.matrix_lr == expected["muon"], stage
        assert sched.grad_clip == 0, stage  # b399e43 clips in base_train only


def stage_settings(cls, *extra):
    return parse(cls, ["--out", "o", "--state", "s", "--start", "x", "--chat-data", "c", "--mixture", "{}", *extra], "")


def table(stage):
    t = FIXTURES["schedules"][stage]
    return t["lr_multiplier"].tolist(), t["muon_momentum"].tolist()


def test_base_schedule_table():
    schedule = Schedule(**base_lrs(), **BASE)
    assert ([lr_multiplier(s, schedule) for s in range(1000)], [muon_momentum(s, schedule) for s in range(1000)]) == table("base_train")


def test_mid_schedule_table():
    """mid_train at --num_iterations 1000 (one micro-batch a step) takes 999 steps, its lr by progress."""
    s = stage_settings(MidSettings)
    schedule = chat_stage.schedule(s, SimpleNamespace(lrs=base_lrs()), 999, "progress", micro_steps=1, momentum_warmup=s.muon_momentum_warmup)
    assert ([lr_multiplier(i, schedule) for i in range(999)], [muon_momentum(i, schedule) for i in range(999)]) == table("mid_train")


def test_sft_schedule_table():
    """chat_sft at num_iterations 1000: 999 steps at 1 - s/1000, momentum 0.95."""
    s = stage_settings(SFTSettings)
    schedule = chat_stage.schedule(s, SimpleNamespace(lrs=base_lrs()), 999, "linear", horizon=1000)
    assert ([lr_multiplier(i, schedule) for i in range(999)], [muon_momentum(i, schedule) for i in range(999)]) == table("chat_sft")


def test_rl_schedule_table():
    s = parse(RLSettings, ["--out", "o", "--state", "s", "--start", "x", "--chat-data", "c"], "")
    schedule = chat_stage.schedule(s, SimpleNamespace(lrs=base_lrs()), 1000, "linear")
    assert ([lr_multiplier(i, schedule) for i in range(1000)], [muon_momentum(i, schedule) for i in range(1000)]) == table("chat_rl")


def test_sft_and_mid_losses_on_b399e43s_batches():
    """The loss the SFT and mid recipes take (mean over the targets that are not -1) on the batches
    b399e43's own builders made, at the weights after the three steps."""
    chat = FIXTURES["chat_loss"]
    model = reference_rotation(GPT(CONFIG), FIXTURES["steps"][2]["params_after"])
    with torch.no_grad():
        assert abs(model(chat["sft_inputs"], chat["sft_targets"]).item() - chat["sft_loss"].item()) < 5e-7
        assert abs(model(chat["mid_inputs"].long(), chat["mid_targets"]).item() - chat["mid_loss"].item()) < 5e-7


def test_one_changed_constant_is_caught():
    """The comparison has teeth: Muon's momentum starting at 0.90 instead of 0.85 changes the
    momentum of every step and the weights after step 2; snakechat's own float32 Newton–Schulz
    misses b399e43's weights by its ~2e-3 per step (note §6)."""
    changed = Schedule(**base_lrs(), **BASE, momentum_start=0.90)
    differ = []
    for step, (_, momentum, _), after in teacher_forced(changed):
        assert momentum != step["muon_momentum"]
        differ.append(sum(not torch.equal(after[ours(n)], v) for n, v in step["params_after"].items()))
    assert differ[2] > 0
    worst = [max((after[ours(n)] - v).abs().max().item() for n, v in step["params_after"].items())
             for step, _, after in teacher_forced(Schedule(**base_lrs(), **{**BASE, "newton_schulz": "precision"}))]
    assert worst[0] == 0 and 1e-4 < worst[1] < 3e-3 and 1e-4 < worst[2] < 3e-3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_auto_newton_schulz_is_b399e43s_where_bf16_is_native(precision):
    """auto: b399e43's bf16 op sequence under bf16 (native bf16), float32 where bf16 would be emulated."""
    from snakechat.train.optim import Muon, newton_schulz_float32, newton_schulz_nanochat

    muon = Muon([torch.nn.Parameter(torch.zeros(4, 4))], precision, "auto")
    assert muon.newton_schulz() is (newton_schulz_nanochat if precision == "bf16" else newton_schulz_float32)
    assert Muon([torch.nn.Parameter(torch.zeros(4, 4))], precision, "nanochat").newton_schulz() is newton_schulz_nanochat
    with pytest.raises(ValueError, match="newton_schulz"):
        Schedule(steps=1, newton_schulz="bf16")


def test_rl_loss_is_a_per_token_mean_per_pass():
    """b399e43's chat_rl: each pass's Σ logp·A over its own sampled tokens, divided by those tokens and
    the number of passes; a pass with fewer sampled tokens weighs each of them more (a mean over the
    whole step would not)."""
    from snakechat.train.rl_math import policy_gradient_loss, sample_rows

    model = GPT.build(GPTConfig(sequence_len=16, vocab_size=32, n_layer=1, n_head=1, n_kv_head=1, n_embd=16), "cpu", 0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    passes = [sample_rows([[1, 2, 3, 4]], [[0, 0, 1, 1]], 0), sample_rows([[1, 2, 5, 6, 7, 8, 9]], [[0, 0, 1, 1, 1, 1, 1]], 0)]
    advantages = [torch.tensor([0.5]), torch.tensor([-0.25])]
    with torch.no_grad():
        got = [policy_gradient_loss(model, x, y, a, len(passes)).item() for (x, y), a in zip(passes, advantages)]
        logp = [-model(x, y, loss_reduction="none").sum().item() for x, y in passes]
    assert got == pytest.approx([-logp[0] * 0.5 / (2 * 2), -logp[1] * -0.25 / (5 * 2)], rel=1e-6)
    whole_step_mean = -(logp[0] * 0.5 + logp[1] * -0.25) / 7
    assert sum(got) != pytest.approx(whole_step_mean, rel=1e-3)
