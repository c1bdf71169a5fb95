"""Experiment tracking (snakechat.runtime.tracking) with the real packages in their offline modes:
a few training steps with each tracker, read back with the tracker's own reader and compared with
train_log.csv; an evaluation's results; a missing package stops the stage before any work."""

import csv
import json
import struct
import sys
from pathlib import Path

import pytest

from snakechat import base_train, chat_eval
from snakechat.runtime import tracking
from test_chat_eval import write_chat_data
from tiny_chat_model import one_torch_thread  # noqa: F401 (autouse fixture)
from tiny_chat_model import write_checkpoint
from world_dataset import write_world_dataset

STEPS = ["--depth", "1", "--aspect-ratio", "32", "--head-dim", "32", "--sequence-len", "32", "--device-batch-rows", "2", "--step-tokens", "64",
         "--steps", "4", "--eval-every", "2", "--eval-tokens", "64", "--log-every", "1", "--save-every", "0", "--compile", "false", "--device", "cpu"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_world_dataset(root)
    return root


def train(corpus, tmp_path, kind):
    """base_train for 4 steps with tracking `kind`; (train_log.csv rows, tracking directory)."""
    out, where = tmp_path / "out", tmp_path / "tracking"
    base_train.main(["--manifest", str(corpus / "manifest.json"), "--tokenizer", str(corpus / "tok"), "--out", str(out), "--state", str(tmp_path / "state"),
                     *STEPS, "--tracking", kind, "--tracking-project", "snakechat-t", "--tracking-dir", str(where)])
    with open(out / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f)), where


def expected(rows):
    """{metric: [(step, value)]} that train_log.csv says the tracker must hold."""
    return {"train/loss": [(int(r["step"]), float(r["loss"])) for r in rows],
            "eval/val_bpb": [(int(r["step"]), float(r["val_bpb"])) for r in rows if r["val_bpb"]]}


def close(got, want):
    return [s for s, _ in got] == [s for s, _ in want] and all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(got, want))


def test_tensorboard_event_files_hold_every_step(corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows, where = train(corpus, tmp_path, "tensorboard")
    events = EventAccumulator(str(where / "tensorboard/snakechat-t/base"))
    events.Reload()
    for metric, want in expected(rows).items():
        assert close([(e.step, e.value) for e in events.Scalars(metric)], want), metric
    assert len(want) == 2 and {"train/lr_mult", "train/tokens_per_s", "final_loss"} <= set(events.Tags()["scalars"])
    assert {"settings/text_summary", "provenance/text_summary"} <= set(events.Tags()["tensors"])


def test_mlflow_file_store_holds_every_step_the_settings_and_provenance(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    rows, where = train(corpus, tmp_path, "mlflow")
    client = MlflowClient((where / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("snakechat-t").experiment_id])
    assert run.info.run_name == "base" and run.info.status == "FINISHED"
    for metric, want in expected(rows).items():
        assert close([(m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)], want), metric
    assert run.data.params["depth"] == "1" and run.data.params["tracking"] == "mlflow"
    provenance = json.loads(Path(client.download_artifacts(run.info.run_id, "provenance.json", str(tmp_path))).read_text())
    assert provenance["module"] == "snakechat.base_train"


def wandb_records(path):
    """The records of an offline run's .wandb file, decoded with wandb's own protobuf messages.
    wandb >= 0.21 ships no Python reader for these files (its Go core reads them); the framing is
    LevelDB's log format: 32 KiB blocks of (crc32c, length, type) chunks after a 7-byte W&B header."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_every_step_and_the_config(corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # wandb's own caches and settings stay in the test's directory
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    rows, where = train(corpus, tmp_path, "wandb")
    [path] = (where / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(path)
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                history.setdefault(item.key or "/".join(item.nested_key), []).append((r.history.step.num, json.loads(item.value_json)))
    for metric, want in expected(rows).items():
        assert close(history[metric], want), metric
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "snakechat-t" and run.display_name == "base"
    config = {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in run.config.update}
    assert config["settings"]["depth"] == 1 and config["provenance"]["module"] == "snakechat.base_train"


def test_an_evaluations_results_go_to_the_tracker(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    checkpoint = write_checkpoint(tmp_path / "sft" / "tiny", tmp_path / "tok")
    out = tmp_path / "sft.csv"
    chat_eval.main(["--checkpoint", str(checkpoint), "--chat-data", str(write_chat_data(tmp_path / "chat")), "--out", str(out), "--max-per-task", "2",
                    "--max-new-tokens", "4", "--tracking", "tensorboard", "--tracking-project", "snakechat-tiny", "--tracking-dir", str(tmp_path / "tracking")])
    with open(out, newline="") as f:
        chatcore = next(r for r in csv.DictReader(f) if r["task"] == "ChatCORE")
    events = EventAccumulator(str(tmp_path / "tracking/tensorboard/snakechat-tiny/chat_eval-sft"))
    events.Reload()
    assert events.Scalars("chat_eval/ChatCORE/centered")[0].value == pytest.approx(float(chatcore["centered"]), abs=1e-6)
    assert {"chat_eval/world_mc/accuracy", "chat_eval/word_problems/accuracy", "chat_eval/code/accuracy"} <= set(events.Tags()["scalars"])


def test_a_missing_tracker_package_stops_the_stage_saying_how_to_install_it(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(SystemExit):
        train(corpus, tmp_path, "mlflow")
    assert "pip install 'snakechat[mlflow]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()
    with pytest.raises(tracking.TrackingError, match=r"pip install 'snakechat\[mlflow\]'"):
        chat_eval.main(["--checkpoint", str(write_checkpoint(tmp_path / "sft/t", tmp_path / "tok")), "--chat-data", str(write_chat_data(tmp_path / "chat")), "--out", str(tmp_path / "x.csv"),
                        "--tracking", "mlflow"])
