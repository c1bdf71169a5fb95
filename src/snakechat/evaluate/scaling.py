"""Scaling-law fits of a sweep: per FLOP budget the loss-optimal parameter count, then power laws
over the budgets (the isoFLOP method of Hoffmann et al. 2022, "approach 2", which nanochat used to
choose its tokens:params ratio).

Per budget C, the final loss of the runs of that budget is fitted by a parabola in log10(params);
its vertex is the loss-optimal N_opt(C), and D_opt(C) is the token count at N_opt, read off the
line through the runs' log10(tokens) against log10(params) (tokens = C / FLOPs per token, so this is
the model's own FLOP count rather than the 6N rule of thumb). Over the budgets, N_opt = k·C^a and
D_opt = k'·C^b are straight lines in log-log space, fitted by least squares; the implied
tokens:params ratio D_opt/N_opt then scales as C^(b-a). Only budgets whose vertex lies within
their runs' sizes enter the laws (the depths must bracket the optimum, as in Hoffmann et al.).

Uncertainties are the fits' own (ordinary least squares, from the residuals): the vertex's standard
error by the delta method where a budget has more runs than the parabola's three coefficients, an
exponent's where there are more budgets than the line's two. Where a fit is exact (too few points)
the error is NaN: it cannot be computed, not zero. Only numpy.
"""

import math

import numpy as np


class FitError(ValueError):
    pass


def _ols(x, y, degree):
    """(coefficients, covariance or None) of a least-squares polynomial, highest power first; the
    covariance from the residuals where there are more points than coefficients."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    coef = np.polyfit(x, y, degree)
    dof = len(x) - (degree + 1)
    if dof <= 0:
        return coef, None
    design = np.vander(x, degree + 1)
    resid = y - design @ coef
    sigma2 = float(resid @ resid) / dof
    return coef, sigma2 * np.linalg.inv(design.T @ design)


def isoflop_optimum(params, losses):
    """The loss-optimal parameter count of one budget's runs: the vertex of a parabola of loss in
    log10(params). Returns log10_n_opt, its standard error (NaN where the fit is exact), the fitted
    loss there, whether the vertex lies within the runs' range (outside it is extrapolated) and the
    parabola's coefficients (highest power first, in log10(params))."""
    x = np.log10(np.asarray(params, float))
    if len(np.unique(x)) < 3:
        raise FitError(f"a parabola needs runs of at least 3 sizes, got {len(np.unique(x))} ({list(params)})")
    coef, cov = _ols(x, losses, 2)
    a, b, c = coef
    if a <= 0:
        raise FitError(f"the loss is not convex in log(params) over {list(params)} (curvature {a:.3g}): no optimum inside; "
                       "widen the depths of this budget so that the smallest and largest both lose to a middle one")
    vertex = -b / (2 * a)
    err = math.nan
    if cov is not None:
        grad = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])
        err = float(math.sqrt(max(grad @ cov @ grad, 0.0)))
    return {"log10_n_opt": float(vertex), "log10_n_opt_err": err, "loss_opt": float(c - b * b / (4 * a)),
            "inside": bool(x.min() <= vertex <= x.max()), "parabola": [float(a), float(b), float(c)]}


def power_law(x, y):
    """y = k·x^e by least squares in log10-log10: (e, its standard error or NaN, log10 k)."""
    if len(x) < 2:
        raise FitError(f"a power law needs at least 2 budgets, got {len(x)}")
    coef, cov = _ols(np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float)), 1)
    err = math.nan if cov is None else float(math.sqrt(cov[0, 0]))
    return float(coef[0]), err, float(coef[1])


def fit(runs, strict=True):
    """The isoFLOP fit of a scaling sweep. `runs`: dicts with budget, params, tokens and loss.
    Returns {"optima": one dict per budget (budget, n_opt, d_opt, ratio, loss_opt, log10_n_opt_err,
    inside), "laws": {"n_opt": (a, err, log10 k), "d_opt": (b, ...), "ratio": (b - a, ...)}}.
    A budget without an optimum raises FitError, or with strict=False is kept as {budget, error}
    and left out of the laws (a table still shows what was measured). A vertex outside its budget's
    sizes is an extrapolation of the parabola, not a measured optimum: it is reported (inside=False)
    and left out of the laws too."""
    budgets = sorted({r["budget"] for r in runs})
    optima = []
    for budget in budgets:
        group = [r for r in runs if r["budget"] == budget]
        try:
            opt = isoflop_optimum([r["params"] for r in group], [r["loss"] for r in group])
        except FitError as e:
            if strict:
                raise FitError(f"budget {budget:.3g}: {e}") from None
            optima.append({"budget": budget, "error": str(e)})
            continue
        slope, intercept = np.polyfit(np.log10([r["params"] for r in group]), np.log10([r["tokens"] for r in group]), 1)
        n_opt = 10 ** opt["log10_n_opt"]
        d_opt = 10 ** (slope * opt["log10_n_opt"] + intercept)
        optima.append({"budget": budget, "n_opt": n_opt, "d_opt": d_opt, "ratio": d_opt / n_opt, **opt})
    laws, found = {}, [o for o in optima if "error" not in o and o["inside"]]
    if len(found) >= 2:
        c = [o["budget"] for o in found]
        laws = {key: power_law(c, [o[key] for o in found]) for key in ("n_opt", "d_opt", "ratio")}
    return {"optima": optima, "laws": laws}
