"""snakechat.sweep's tables and the sweep plots, from checkpoint directories written here (meta.json
and train_log.csv as base_train writes them) whose losses follow a known isoFLOP optimum."""

import argparse
import json
import math

import pandas as pd
import pytest

from snakechat import plots, sweep
from test_report import overlapping_texts

A, K = 0.5, 0.05  # N_opt = K * C^A


def checkpoint(root, name, depth, params, budget, step_tokens=4096, base_eval=None):
    """A base checkpoint of `params` parameters trained for `budget` FLOPs, its final val bpb on a
    parabola in log10(params) around N_opt(budget)."""
    d = root / name
    d.mkdir()
    fpt = 6 * params
    steps = round(budget / (fpt * step_tokens))
    loss = 2.0 - 0.1 * math.log10(budget) + 0.5 * (math.log10(params) - math.log10(K * budget**A)) ** 2
    (d / "meta.json").write_text(json.dumps({
        "derived": {"params": params, "flops_per_token": fpt, "step_tokens": step_tokens}, "step": steps, "tokens": steps * step_tokens,
        "flops": steps * step_tokens * fpt, "elapsed_s": 1.5 * depth, "val_bpb": loss}))
    pd.DataFrame({"step": [steps // 2, steps], "flops": [steps // 2 * step_tokens * fpt, steps * step_tokens * fpt], "val_bpb": [loss + 0.3, loss]}
                 ).to_csv(d / "train_log.csv", index=False)
    spec = {"depth": depth, "budget": budget, "checkpoint": str(d)}
    if base_eval is not None:
        path = root / f"{name}.csv"
        pd.DataFrame({"label": ["task", "CORE"], "centered": [base_eval, base_eval]}).to_csv(path, index=False)
        spec["base_eval"] = str(path)
    return spec


@pytest.fixture
def scaling_csv(tmp_path):
    runs = {}
    for budget in (1e14, 1e15, 1e16):
        centre = K * budget**A
        for depth, factor in enumerate((0.25, 0.5, 1.0, 2.0, 4.0), start=1):
            runs[f"s-{budget:.0e}-d{depth}"] = checkpoint(tmp_path, f"s-{budget:.0e}-d{depth}", depth, int(centre * factor), budget, step_tokens=64)
    out = tmp_path / "scaling.csv"
    sweep.main(["scaling", "--runs", json.dumps(runs), "--out", str(out)])
    return out


@pytest.fixture
def series_csv(tmp_path):
    runs = {f"s-d{d}": {**checkpoint(tmp_path, f"s-d{d}", d, 10**5 * d * d, 1e13, base_eval=0.1 * d), "budget": None} for d in (1, 2, 3)}
    out = tmp_path / "series.csv"
    sweep.main(["series", "--runs", json.dumps(runs), "--out", str(out)])
    return out


def test_scaling_table_has_runs_optima_and_laws(scaling_csv):
    df = pd.read_csv(scaling_csv)
    runs, optima, laws = (df[df["kind"] == k] for k in ("run", "optimum", "law"))
    assert len(runs) == 15 and len(optima) == 3 and len(laws) == 3
    assert (runs["budget_steps_off"].abs() <= 0.5).all()
    law = laws.set_index("run")
    # N_opt ∝ C^0.5 up to the rounding of parameter counts and steps in the checkpoints
    assert law.loc["params_opt ∝ C^a", "exponent"] == pytest.approx(A, abs=0.01)
    # tokens = C / (6N): D_opt ∝ C^(1-a), and the ratio's exponent is the difference
    assert law.loc["tokens_opt ∝ C^b", "exponent"] == pytest.approx(1 - A, abs=0.01)
    assert law.loc["tokens_per_param_opt ∝ C^(b-a)", "exponent"] == pytest.approx(1 - 2 * A, abs=0.02)
    assert (law["exponent_err"] >= 0).all()  # 3 budgets, 2 coefficients: an error is computed
    for o in optima.itertuples():
        assert o.params == pytest.approx(K * o.budget**A, rel=0.05)


def test_series_table_reads_each_run(series_csv):
    df = pd.read_csv(series_csv)
    assert list(df["depth"]) == [1, 2, 3] and list(df["core"]) == pytest.approx([0.1, 0.2, 0.3])
    assert list(df["train_s"]) == [1.5, 3.0, 4.5]


def test_a_checkpoint_without_meta_is_named(tmp_path):
    with pytest.raises(SystemExit, match="run x: no meta.json"):
        sweep.main(["series", "--runs", json.dumps({"x": {"depth": 1, "checkpoint": str(tmp_path)}}), "--out", str(tmp_path / "o.csv")])


@pytest.mark.parametrize("kind", ["series", "scaling"])
def test_sweep_plots_have_no_overlapping_text(kind, request, tmp_path):
    csv = request.getfixturevalue(f"{kind}_csv")
    draw, _ = plots.PLOTS[kind]
    assert overlapping_texts(draw(argparse.Namespace(csv=str(csv)))) == []
    out = tmp_path / f"{kind}.png"
    plots.main([kind, "--csv", str(csv), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_scaling_sweep_without_an_optimum_inside_its_sizes_still_plots(tmp_path):
    """Every budget's best size below the smallest tried (a sweep that needs more compute): the
    isoFLOP panel is drawn, the power-law panels say there is nothing to fit (they crashed on log axes)."""
    runs = {}
    for budget in (1e14, 2e14, 4e14):
        centre = K * budget**A
        for depth, factor in enumerate((8.0, 16.0, 32.0), start=1):
            runs[f"s-{budget:.0e}-d{depth}"] = checkpoint(tmp_path, f"s-{budget:.0e}-d{depth}", depth, int(centre * factor), budget, step_tokens=64)
    csv = tmp_path / "scaling.csv"
    sweep.main(["scaling", "--runs", json.dumps(runs), "--out", str(csv)])
    fig = plots.plot_scaling(argparse.Namespace(csv=str(csv)))
    texts = [t.get_text() for t in fig.axes[1].texts + fig.axes[2].texts]
    assert len(texts) == 2 and all("no power law to fit" in t for t in texts)
    assert overlapping_texts(fig) == []

