"""The config's sweeps (snakechat.pipeline.sweeps): runs derived from their base model, named by
depth and budget, each sized to its budget; bad sweeps refused naming the sweep's key."""

import copy

import pytest

from snakechat.model import sizing
from snakechat.pipeline import configcheck, sweeps
from shipped_workflow import SCHEMA, dry_run, good_config, refusal, workflow_copy


@pytest.fixture(scope="module")
def config():
    return configcheck.validate(good_config(), SCHEMA)


def test_budget_labels():
    assert [sweeps.budget_label(c) for c in (2e12, 2.5e12, 1e19, 3.25e18, 1000.0)] == ["2e12", "2.5e12", "1e19", "3.25e18", "1e3"]


def test_runs_are_models_derived_from_the_sweeps_model(config):
    tiny = config["models"]["tiny"]
    run = config["models"]["tiny-scaling-1e12-d2"]
    assert run["depth"] == 2 and run["base"]["target_flops"] == 1e12 and run["base"]["steps"] == 0
    assert run["base"]["step_tokens"] == 2048 and run["base"]["aspect_ratio"] == 32  # the sweep's own base settings
    # everything else is the base model's: a setting added to models (a recipe, say) is inherited as it is
    for key in set(tiny) - {"depth", "base"}:
        assert run[key] == tiny[key], key
    assert {k: v for k, v in run["base"].items() if k not in ("steps", "target_flops", "step_tokens", "device_batch_rows", "eval_every", "save_every", "aspect_ratio", "head_dim")} == \
        {k: v for k, v in tiny["base"].items() if k not in ("steps", "target_flops", "step_tokens", "device_batch_rows", "eval_every", "save_every", "aspect_ratio", "head_dim")}
    series = config["models"]["d-series-d12"]
    assert series["depth"] == 12 and series["tokenizer"] == "fineweb-64k" and series["base"] == config["models"]["d20"]["base"]
    assert [r["run"] for r in sweeps.of(config, "series", "tiny-series")] == [f"tiny-series-d{d}" for d in (1, 2, 3, 4)]


def test_an_added_key_of_the_base_model_is_inherited():
    cfg = good_config()
    cfg["models"]["tiny"]["precision"] = "fp32"
    out = configcheck.validate(cfg, SCHEMA)
    assert {out["models"][r["run"]]["precision"] for r in sweeps.runs(out) if r["model"] == "tiny"} == {"fp32"}


def test_each_scaling_run_is_sized_to_its_budget_within_half_a_step(config):
    for r in sweeps.runs(config):
        if r["budget"] is None:
            continue
        m = config["models"][r["run"]]
        vocab = config["tokenizers"][m["tokenizer"]]["vocab_size"]
        size = sizing.size(m["depth"], vocab, **{k: m["base"][k] for k in sizing.SIZE_KEYS})
        step_flops = size.flops_per_token * size.step_tokens
        assert abs(size.total_flops - r["budget"]) <= step_flops / 2, r["run"]
        # one step more or fewer would be further from the budget
        assert abs(size.total_flops - r["budget"]) <= abs(size.total_flops + step_flops - r["budget"])
        assert abs(size.total_flops - r["budget"]) <= abs(size.total_flops - step_flops - r["budget"])


def test_steps_and_target_flops_are_exclusive():
    with pytest.raises(ValueError, match="give steps"):
        sizing.size(2, 512, 64, 64, 64, 0, 0, 256, 10, 20, 1e10)


def sweep_setter(kind, name, key, value):
    def mutate(cfg):
        cfg["sweeps"][kind][name][key] = value
    return mutate


CASES = {
    "unknown base setting": (sweep_setter("series", "tiny-series", "base", {"stepz": 3}), "unknown key 'sweeps.series.tiny-series.base.stepz'"),
    "base setting out of bounds": (sweep_setter("series", "tiny-series", "base", {"steps": -1}), "sweeps.series.tiny-series.base.steps: -1 is less than the minimum of 0"),
    "model not in the config": (sweep_setter("scaling", "tiny-scaling", "model", "tinny"), "sweeps.scaling.tiny-scaling.model: 'tinny' is not defined in models (known: d20, gpt2, tiny)"),
    "scaling steps": (sweep_setter("scaling", "tiny-scaling", "base", {"steps": 5}), "sweeps.scaling.tiny-scaling.base.steps: a scaling run's steps come from its budget"),
    "budget as YAML's string": (sweep_setter("scaling", "tiny-scaling", "budgets", [{"flops": "1e12", "depths": [1, 2, 3]}]),
                                "sweeps.scaling.tiny-scaling.budgets.0.flops: '1e12' is not of type 'number'"),
    "too few depths for a parabola": (sweep_setter("scaling", "tiny-scaling", "budgets", [{"flops": 1.0e12, "depths": [1, 2]}]),
                                      "sweeps.scaling.tiny-scaling.budgets.0.depths: [1, 2] is too short"),
    "budget given twice": (sweep_setter("scaling", "tiny-scaling", "budgets", [{"flops": 1.0e12, "depths": [1, 2, 3]}, {"flops": 1.0e12, "depths": [2, 3, 4]}]),
                           "sweeps.scaling.tiny-scaling.budgets.1: run 'tiny-scaling-1e12-d2' is also a run of sweeps.scaling.tiny-scaling.budgets.0"),
    "run named as a model": (lambda cfg: cfg["models"].update({"tiny-series-d1": copy.deepcopy(cfg["models"]["tiny"])}),
                             "sweeps.series.tiny-series: run 'tiny-series-d1' has the name of a model of the config"),
    "model with steps and a budget": (lambda cfg: cfg["models"]["tiny"]["base"].update(target_flops=1e12),
                                      "models.tiny.base: steps and target_flops both set the number of steps"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_sweeps_are_refused_naming_the_key(case):
    mutate, expected = CASES[case]
    assert expected in refusal(mutate)


def test_a_budget_under_one_step_fails_the_dry_run_naming_the_sweep(tmp_path):
    work = workflow_copy(tmp_path)
    (work / "small.yaml").write_text("sweeps:\n  scaling:\n    tiny-scaling:\n      budgets: [{flops: 4.0e+9, depths: [1, 2, 3]}]\n")
    status, out = dry_run(work, "results/scaling/tiny-scaling.csv", "--configfile", "config/config.yaml", "small.yaml")
    assert status != 0
    assert "sweeps.scaling.tiny-scaling.budgets.0: run tiny-scaling-4e9-d3: target_flops 4e+09 is less than one step of depth 3" in out
    status, out = dry_run(work, "results/series/tiny-seires.csv")
    assert status != 0 and "series sweep 'tiny-seires' is not in the config (known: d-series, tiny-series)" in out
