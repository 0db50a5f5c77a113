"""Experiment tracking (training.report_to): a toy run writes TensorBoard event files and a trackio run, both read back
here with the libraries' own readers; the adapter repo publishes the event files and its card says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubstyle.config import TrainingConfig, load_config
from hubstyle.errors import HubstyleError
from hubstyle.layout import LOSS_HISTORY, RunLayout
from hubstyle.tracking import (
    PROJECT,
    STATE_FILE,
    TENSORBOARD_DIR,
    TRACKING_EXTRA,
    check_report_to,
    open_tracker,
)


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the event files in ``folder``, read by TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def trackio_logs(run_name: str) -> list[dict]:
    """The rows trackio's local store (TRACKIO_DIR, set by conftest) holds for ``run_name`` in hubstyle's project."""
    import trackio
    from trackio.sqlite_storage import SQLiteStorage  # what `trackio get` reads locally

    assert run_name in [run.name for run in trackio.Api().runs(PROJECT)]
    return SQLiteStorage.get_logs(PROJECT, run_name)


def curve(rows: list[dict], name: str) -> list[tuple[int, float]]:
    return [(row["step"], row[name]) for row in rows if name in row]


def toy_config(root: Path, name: str, tiny_base: Path, *, evaluate: bool):
    """The toy pipeline config (tests.tiny) logging to TensorBoard and trackio; without ``evaluate``, on the tiny
    base as it is (no pretraining) and with held-out perplexities only."""
    from tests.tiny import toy_run_config

    cfg = toy_run_config(root / name, root / "prompts.txt")
    cfg.training.report_to = ["tensorboard", "trackio"]
    cfg.classifier.backbone = str(tiny_base)  # a tiny encoder: seconds instead of MiniLM's half a minute
    if not evaluate:
        cfg.base_model = str(tiny_base)
        cfg.evaluation.enabled = False
        cfg.evaluation.heldout_blocks = 4  # the perplexities on a few held-out blocks: seconds, not half a minute
    return cfg


def run_logged(cfg) -> tuple[RunLayout, list[str]]:
    from hubstyle.runner import run

    lines: list[str] = []
    run(cfg, log=lambda *parts: lines.append(" ".join(map(str, parts))))
    return RunLayout(cfg.out), lines


def history_curves(layout: RunLayout) -> dict[str, list[tuple[int, float]]]:
    """The loop's own record of the run (loss_history.json) as the curves a tracker should hold."""
    history = json.loads((layout.adapter / LOSS_HISTORY).read_text())
    return {"train/loss": [(r["step"], r["loss"]) for r in history],
            "train/learning_rate": [(r["step"], r["lr"]) for r in history],
            "eval/loss": [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]}


def assert_logged(layout: RunLayout, figures: dict[str, float]) -> None:
    """Both trackers hold the run's curves (as loss_history.json) and ``figures`` at the last step."""
    curves = history_curves(layout)
    steps = [s for s, _ in curves["train/loss"]]
    assert steps == list(range(1, 9)) and [s for s, _ in curves["eval/loss"]] == [4, 8]
    tb = tensorboard_scalars(layout.logs / TENSORBOARD_DIR)
    for name, points in curves.items():
        assert tb[name] == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], name  # float32 in event files
    assert [s for s, _ in tb["train/tokens_per_second"]] == steps and all(v > 0 for _, v in tb["train/tokens_per_second"])
    rows = trackio_logs(json.loads((layout.logs / STATE_FILE).read_text())["trackio"])
    for name, points in curves.items():
        assert curve(rows, name) == [(s, pytest.approx(v, rel=1e-9)) for s, v in points], name
    for name, value in figures.items():
        assert tb[name] == [(8, pytest.approx(value, rel=1e-6))], name
        assert curve(rows, name) == [(8, pytest.approx(value, rel=1e-9))], name


def test_a_run_logs_its_loss_curve_to_tensorboard_and_trackio(tmp_path, tiny_base):
    layout, lines = run_logged(toy_config(tmp_path, "quick-run", tiny_base, evaluate=False))
    metrics = json.loads(layout.metrics.read_text())
    assert_logged(layout, {"eval/perplexity_style": metrics["perplexity"]["style"]["tuned"],
                           "eval/base_perplexity_generic": metrics["perplexity"]["generic"]["base"]})
    name = json.loads((layout.logs / STATE_FILE).read_text())["trackio"]
    assert any(line.startswith("tracking: TensorBoard event files in") for line in lines)
    assert f"tracking: trackio run '{name}' in project '{PROJECT}' (trackio show --project {PROJECT})" in lines


@pytest.mark.slow
def test_evaluation_figures_are_logged_and_the_adapter_repo_publishes_the_logs(tmp_path, tiny_base):
    from huggingface_hub import ModelCard

    from hubstyle.publish import build_publish_folders, default_repo_ids

    layout, _ = run_logged(toy_config(tmp_path, "tracked-run", tiny_base, evaluate=True))
    metrics = json.loads(layout.metrics.read_text())
    assert_logged(layout, {"eval/style_rate": metrics["style_rate"]["tuned"]["rate"],
                           "eval/base_style_rate": metrics["style_rate"]["base"]["rate"],
                           "eval/relevance": metrics["answers"]["tuned"]["relevance"]["mean"],
                           "eval/perplexity_style": metrics["perplexity"]["style"]["tuned"],
                           "eval/base_perplexity_generic": metrics["perplexity"]["generic"]["base"],
                           "eval/classifier_macro_f1": metrics["classifier"]["macro_f1"]})

    folder = build_publish_folders(layout.root, default_repo_ids("alice", "bard", base_is_local=True),
                                   what=("adapter",))["adapter"]
    published = sorted((folder / "logs").iterdir())
    assert published and all(p.name.startswith("events.out.tfevents.") and ".hubstyle." in p.name for p in published)
    assert tensorboard_scalars(folder / "logs") == tensorboard_scalars(layout.logs / TENSORBOARD_DIR)
    card = ModelCard((folder / "README.md").read_text())
    assert "tensorboard" in card.data.tags
    assert "are TensorBoard logs in `logs/`" in card.text
    assert "report_to" not in card.text  # where the logs go is no hyper-parameter


def test_resume_drops_what_the_interrupted_run_logged_and_a_new_run_starts_over(tmp_path):
    run_dir = tmp_path / "resumed-run"
    with open_tracker(["tensorboard", "trackio"], run_dir, {"seed": 0}) as tracker:
        for step in range(1, 6):  # killed after step 5; the last checkpoint was at step 2
            tracker.log({"train/loss": 10.0 - step}, step)
    name = json.loads((run_dir / "logs" / STATE_FILE).read_text())["trackio"]
    with open_tracker(["tensorboard", "trackio"], run_dir, mode="resume") as tracker:
        for step in (3, 4):
            tracker.log({"train/loss": 20.0 - step}, step)
    with open_tracker(["tensorboard", "trackio"], run_dir, mode="append") as tracker:
        tracker.log({"eval/style_rate": 0.75}, 4)
    events = run_dir / "logs" / TENSORBOARD_DIR
    assert tensorboard_scalars(events) == {"train/loss": [(1, 9.0), (2, 8.0), (3, 17.0), (4, 16.0)],
                                          "eval/style_rate": [(4, 0.75)]}
    assert json.loads((run_dir / "logs" / STATE_FILE).read_text())["trackio"] == name  # one trackio run throughout
    rows = trackio_logs(name)
    assert curve(rows, "eval/style_rate") == [(4, 0.75)] and (4, 16.0) in curve(rows, "train/loss")

    with open_tracker(["none"], run_dir):  # a fresh training run without tracking: no stale curve is left to publish
        pass
    assert not list(events.iterdir()) and not (run_dir / "logs" / STATE_FILE).exists()


def test_report_to_takes_a_name_or_a_list_and_refuses_what_it_does_not_know(tmp_path):
    assert TrainingConfig().report_to == ["none"]
    assert TrainingConfig(report_to="tensorboard").report_to == ["tensorboard"]
    config = tmp_path / "run.yaml"
    config.write_text("training:\n  report_to: trackio\n")
    assert load_config(config).training.report_to == ["trackio"]
    config.write_text("training:\n  report_to: [tensorboard, trackio]\n")
    assert load_config(config).training.report_to == ["tensorboard", "trackio"]
    config.write_text("training:\n  report_to: [tensorbord]\n")
    with pytest.raises(HubstyleError, match=r"'training.report_to\[0\]' is 'tensorbord': did you mean 'tensorboard'"):
        load_config(config)
    with pytest.raises(HubstyleError, match="'none' turns tracking off"):
        TrainingConfig(report_to=["none", "trackio"])
    with open_tracker(["none"], tmp_path / "quiet-run") as tracker:  # nothing to log to: nothing written
        tracker.log({"train/loss": 1.0}, 1)
    assert tracker.destinations == [] and not (tmp_path / "quiet-run").exists()


@pytest.mark.parametrize(("tracker", "install"), [("tensorboard", TRACKING_EXTRA), ("trackio", TRACKING_EXTRA),
                                                  ("wandb", "pip install wandb")])
def test_a_missing_tracker_package_is_one_line_naming_what_to_install(monkeypatch, tmp_path, tracker, install):
    import importlib.util

    from hubstyle import tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == tracking.PACKAGES[tracker][0] else real(name, *a))
    with pytest.raises(HubstyleError) as err:
        check_report_to(["none", tracker])
    assert str(err.value) == (f"training.report_to lists '{tracker}', but the '{tracking.PACKAGES[tracker][0]}' "
                              f"package is not installed: {install}")
    assert 'pip install "hubstyle[tracking]"' == TRACKING_EXTRA
    with pytest.raises(HubstyleError, match="is not installed"):  # before anything is written
        open_tracker([tracker], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_cli_refuses_a_missing_tracker_before_training(monkeypatch, tmp_path, run_cli, tiny_base):
    from hubstyle import tracking

    monkeypatch.setattr(tracking, "PACKAGES", {**tracking.PACKAGES, "tensorboard": ("no_such_tb_pkg", TRACKING_EXTRA)})
    config = tmp_path / "run.yaml"
    config.write_text(f"base_model: {tiny_base}\noutput_dir: {tmp_path / 'out'}\n"
                      "training: {cutoff_len: 64, max_steps: 2, report_to: tensorboard}\n")
    code, _, err = run_cli("train", str(config))
    assert code == 1
    assert err.strip() == ("error: training.report_to lists 'tensorboard', but the 'no_such_tb_pkg' package is not "
                           'installed: pip install "hubstyle[tracking]"')
    assert not (tmp_path / "out" / "adapter").exists()


def test_wandb_must_be_configured(monkeypatch):
    from hubstyle import tracking

    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name, *a: object())  # as if installed
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    monkeypatch.setenv("HOME", "/nonexistent")
    with pytest.raises(HubstyleError, match="wandb is not configured: run `wandb login`.*WANDB_MODE=offline"):
        check_report_to(["wandb"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert check_report_to(["wandb"]) is None  # offline logging needs no account
