"""Experiment tracking: a stage's metrics also go to the tracker its model's config names
(`tracking: none | wandb | tensorboard | mlflow`), beside the CSVs, which stay as they are.

One interface for the trainer and the evaluations: `open_run(kind, project, name, directory,
config, provenance)` gives a run with `log(metrics, step)` (per-step numbers), `summary(metrics)`
(final results) and `close()`. Project and run names come from the model and the stage
(`snakechat-tiny`, `base`, `chat_eval-sft`); the run carries the stage's settings and provenance.

Offline by default, under `directory` (results/tracking in the workflow), so nothing needs an
account or a network:
- wandb: an offline run in `directory/wandb` (`wandb sync` uploads it later); WANDB_MODE set by
  the user (online) wins.
- tensorboard: event files in `directory/tensorboard/<project>/<name>` (`tensorboard --logdir`).
- mlflow: a file store in `directory/mlruns` (`mlflow ui --backend-store-uri`), one experiment per
  project; MLFLOW_TRACKING_URI set by the user wins. The file store suits jobs that run at once
  on a shared filesystem, where SQLite does not; MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE to use it.
Each is an optional extra (`pip install 'snakechat[wandb]'`); a missing package is an error
before any work. Only rank 0 of a distributed run logs.
"""

import json
import os
import time
from pathlib import Path

from snakechat.runtime.common import dist_info

KINDS = ("none", "wandb", "tensorboard", "mlflow")
PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow"}


class TrackingError(SystemExit):
    """A tracker that cannot run here: the stage stops with this message (exit status 1)."""


def add_args(p):
    """The tracking flags of an evaluation stage's argparse parser (the trainer's are RunSettings fields)."""
    p.add_argument("--tracking", choices=KINDS, default="none", help="experiment tracker for this run's metrics (offline by default)")
    p.add_argument("--tracking-project", default="snakechat", help="tracker project (MLflow experiment); the workflow passes snakechat-<model>")
    p.add_argument("--tracking-dir", default="results/tracking", help="where the offline tracker writes")


def flat(config, prefix=""):
    """{"a.b": value} of a nested dict, for trackers whose parameters are flat."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def numbers(metrics):
    """The metrics that are numbers (None, text and NaN are left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


class NoTracking:
    def log(self, metrics, step):
        pass

    def summary(self, metrics):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Wandb(NoTracking):
    def __init__(self, project, name, directory, config):
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name, dir=str(directory), config=config, mode=os.environ.get("WANDB_MODE", "offline"),
                              settings=wandb.Settings(console="off", silent=True))

    def log(self, metrics, step):
        self.run.log(numbers(metrics), step=step)

    def summary(self, metrics):
        self.run.summary.update(numbers(metrics))

    def close(self):
        self.run.finish()


class TensorBoard(NoTracking):
    def __init__(self, project, name, directory, config):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory / "tensorboard" / project / name))
        for key, value in config.items():
            self.writer.add_text(key, f"```\n{json.dumps(value, indent=2, sort_keys=True, default=str)}\n```")
        self.last_step = 0

    def log(self, metrics, step):
        for key, value in numbers(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.last_step = step

    def summary(self, metrics):
        self.log(metrics, self.last_step)

    def close(self):
        self.writer.close()


class Mlflow(NoTracking):
    def __init__(self, project, name, directory, config):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (directory / "mlruns").resolve().as_uri()
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(project)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(project)
            except MlflowException:  # another job created it meanwhile
                experiment_id = self.client.get_experiment_by_name(project).experiment_id
        else:
            experiment_id = experiment.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        params = {k: str(v)[:6000] for k, v in flat(config.get("settings", {})).items()}
        for lo in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=[self.param(k, v) for k, v in list(params.items())[lo : lo + 100]])
        for key, value in config.items():
            self.client.log_dict(self.run_id, value, f"{key}.json")
        self.last_step = 0

    @staticmethod
    def param(key, value):
        from mlflow.entities import Param

        return Param(key, value)

    def log(self, metrics, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in numbers(metrics).items()])
        self.last_step = step

    def summary(self, metrics):
        self.log(metrics, self.last_step)

    def close(self):
        self.client.set_terminated(self.run_id)


BACKENDS = {"wandb": Wandb, "tensorboard": TensorBoard, "mlflow": Mlflow}


def check(kind):
    """Fail, saying how to install it, where the tracker's package is missing (before any work)."""
    if kind not in KINDS:
        raise TrackingError(f"tracking {kind!r} is not one of {', '.join(KINDS)}")
    if kind != "none":
        try:
            __import__(PACKAGES[kind])
        except ImportError:
            raise TrackingError(f"tracking: {kind} needs the {kind} package: pip install 'snakechat[{kind}]'") from None


def open_run(kind, project, name, directory, config, provenance=None):
    """The run metrics go to: a tracker of `kind` on rank 0, nothing elsewhere or for kind none.
    `config` (the stage's settings) and `provenance` are attached to it."""
    check(kind)
    if kind == "none" or dist_info()[0] != 0:
        return NoTracking()
    return BACKENDS[kind](project, name, Path(directory), {"settings": config, "provenance": provenance or {}})


def report_results(args, name, settings, provenance, results):
    """An evaluation's results (`results`: {metric: number}) as a tracker run of its own, from the
    flags add_args gave the stage's parser."""
    with open_run(args.tracking, args.tracking_project, name, args.tracking_dir, settings, provenance) as run:
        run.summary(results)
