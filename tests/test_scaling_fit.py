"""The isoFLOP fit (snakechat.evaluate.scaling) on synthetic sweeps whose optimum is known."""

import math

import numpy as np
import pytest

from snakechat.evaluate import scaling

BUDGETS = [1e16, 1e17, 1e18, 1e19]


def parabola_sweep(a, k, budgets=BUDGETS, noise=0.0, seed=0):
    """Runs whose loss is an exact parabola in log10(params) around N_opt = k·C^a, tokens = C/(6N)."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in budgets:
        centre = math.log10(k * c**a)
        for dx in (-0.6, -0.3, 0.0, 0.3, 0.6):
            n = 10 ** (centre + dx)
            runs.append({"budget": c, "params": n, "tokens": c / (6 * n), "loss": 3.0 - 0.1 * math.log10(c) + 0.8 * dx**2 + noise * rng.normal()})
    return runs


def test_fit_recovers_a_known_power_law():
    result = scaling.fit(parabola_sweep(a=0.45, k=0.3))
    a, a_err, log_k = result["laws"]["n_opt"]
    assert a == pytest.approx(0.45, abs=1e-9) and log_k == pytest.approx(math.log10(0.3), abs=1e-9)
    # D_opt = C/(6 N_opt) = C^(1-a)/(6k): exponent 0.55, and the ratio's exponent is b - a
    b, _, _ = result["laws"]["d_opt"]
    assert b == pytest.approx(0.55, abs=1e-9)
    assert result["laws"]["ratio"][0] == pytest.approx(0.10, abs=1e-9)
    for opt in result["optima"]:
        assert opt["n_opt"] == pytest.approx(0.3 * opt["budget"] ** 0.45, rel=1e-9)
        assert opt["ratio"] == pytest.approx(opt["budget"] / (6 * opt["n_opt"] ** 2), rel=1e-9)
        assert opt["inside"]
    assert a_err == pytest.approx(0.0, abs=1e-9)  # exact points: the error is computed, and zero


def test_a_different_exponent_gives_a_different_fit():
    assert scaling.fit(parabola_sweep(a=0.6, k=0.3))["laws"]["n_opt"][0] == pytest.approx(0.6, abs=1e-9)


def test_chinchilla_loss_surface_gives_its_optimal_exponent():
    """L = E + A/N^alpha + B/D^beta with D = C/(6N): N_opt ∝ C^(beta/(alpha+beta)). The parabola is an
    approximation of that curve, so the exponent comes back to within a few thousandths."""
    alpha, beta = 0.34, 0.28
    runs = []
    for c in BUDGETS:
        for n in np.logspace(math.log10(c) / 2 - 2.2, math.log10(c) / 2 - 0.6, 7):
            d = c / (6 * n)
            runs.append({"budget": c, "params": n, "tokens": d, "loss": 1.69 + 406.4 / n**alpha + 410.7 / d**beta})
    a, _, _ = scaling.fit(runs)["laws"]["n_opt"]
    assert a == pytest.approx(beta / (alpha + beta), abs=0.01)


def test_noisy_points_have_an_error_that_covers_the_truth():
    result = scaling.fit(parabola_sweep(a=0.5, k=0.1, noise=0.01, seed=3))
    a, a_err, _ = result["laws"]["n_opt"]
    assert 0 < a_err < 0.1
    assert abs(a - 0.5) < 3 * a_err
    assert all(0 < o["log10_n_opt_err"] < 0.5 for o in result["optima"])


def test_too_few_points_have_no_error_rather_than_zero():
    opt = scaling.isoflop_optimum([1e6, 2e6, 4e6], [3.0, 2.9, 3.05])
    assert math.isnan(opt["log10_n_opt_err"])
    a, a_err, _ = scaling.power_law([1e12, 1e13], [1e5, 3e5])
    assert math.isnan(a_err) and a == pytest.approx(math.log10(3))


def test_a_budget_without_an_inner_optimum_is_refused_naming_it():
    runs = [{"budget": 2e12, "params": n, "tokens": 1e6, "loss": loss} for n, loss in ((1e6, 3.0), (2e6, 3.1), (4e6, 3.0))]
    with pytest.raises(scaling.FitError, match="budget 2e\\+12: the loss is not convex"):
        scaling.fit(runs)
    with pytest.raises(scaling.FitError, match="at least 3 sizes"):
        scaling.isoflop_optimum([1e6, 1e6, 2e6], [3.0, 2.9, 3.1])


def test_a_budget_without_an_optimum_is_kept_out_of_the_laws_when_not_strict():
    runs = parabola_sweep(a=0.45, k=0.3) + [{"budget": 1e20, "params": n, "tokens": 1e6, "loss": loss} for n, loss in ((1e9, 3.0), (2e9, 3.2), (4e9, 3.1))]
    result = scaling.fit(runs, strict=False)
    assert "not convex" in result["optima"][-1]["error"]
    assert result["laws"]["n_opt"][0] == pytest.approx(0.45, abs=1e-9)


def test_an_extrapolated_vertex_is_reported_but_left_out_of_the_laws():
    # a budget whose runs all lie right of its optimum: the vertex is outside their sizes
    runs = parabola_sweep(a=0.45, k=0.3) + [
        {"budget": 1e20, "params": 0.3 * 1e20**0.45 * f, "tokens": 1e6, "loss": 1.0 + math.log10(f) ** 2} for f in (3.0, 6.0, 12.0)]
    result = scaling.fit(runs, strict=False)
    assert result["optima"][-1]["inside"] is False
    assert result["optima"][-1]["n_opt"] == pytest.approx(0.3 * 1e20**0.45, rel=1e-6)
    assert result["laws"]["n_opt"][0] == pytest.approx(0.45, abs=1e-9)
