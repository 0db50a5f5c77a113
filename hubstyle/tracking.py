"""Experiment tracking through the libraries people already use: TensorBoard, trackio (local) and Weights & Biases.

``open_tracker(report_to, run_dir, config)`` returns a :class:`Tracker`: training logs every step through it, the
evaluation its figures, under the names transformers' Trainer uses (``train/loss``, ``train/learning_rate``,
``eval/loss``, ``eval/style_rate``, ...). Each backend writes with its own library (``SummaryWriter`` from
``torch.utils.tensorboard``, ``trackio.init``/``log``, ``wandb.init``/``log``); nothing here invents a file format.

Where the logs go: TensorBoard event files in ``RUN/logs/tensorboard/`` (published with the adapter, where the Hub
shows them in the repo's *Training metrics* tab); trackio's own local store (``TRACKIO_DIR``, by default
``<HF_HOME>/trackio``) in the project ``hubstyle``; wandb's folder ``RUN/logs/wandb/``. ``RUN/logs/tracking.json``
names the trackio and wandb runs, so the evaluation (a later stage, perhaps a later process) adds its figures to the
run that training started. Only the main process of a multi-process launch logs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubstyle.errors import HubstyleError
from hubstyle.fsio import atomic_write, is_main_process
from hubstyle.layout import RunLayout

if TYPE_CHECKING:
    from hubstyle.facts import RunFacts

TRACKING_EXTRA = 'pip install "hubstyle[tracking]"'
# tracker -> (the package it needs, how to install it); wandb is not in the extra: it needs an account to be useful
PACKAGES = {"tensorboard": ("tensorboard", TRACKING_EXTRA), "trackio": ("trackio", TRACKING_EXTRA),
            "wandb": ("wandb", "pip install wandb")}
PROJECT = "hubstyle"  # the trackio and wandb project every run logs to
TENSORBOARD_DIR = "tensorboard"  # under RUN/logs/
STATE_FILE = "tracking.json"  # under RUN/logs/: the trackio and wandb runs this run folder logs to
EVENTS_MARK = "tfevents"  # TensorBoard's event files (and the Hub) are recognised by this in their name
PUBLISHED_LOGS = "logs"  # the adapter repo's folder of event files (the Hub's Training metrics tab reads it)
MODES = ("new", "resume", "append")
WANDB_OFFLINE_MODES = frozenset({"offline", "disabled", "dryrun"})


def check_report_to(report_to: Sequence[str]) -> None:
    """Return None when every tracker in ``report_to`` can log here; raise a one-line HubstyleError naming what to
    install (or, for wandb, how to configure it) otherwise."""
    for name in report_to:
        if name == "none":
            continue
        if name not in PACKAGES:
            raise HubstyleError(f"unknown tracker '{name}' in training.report_to; use none, {', '.join(PACKAGES)}")
        package, install = PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise HubstyleError(f"training.report_to lists '{name}', but the '{package}' package is not installed: "
                                f"{install}")
        if name == "wandb" and not _wandb_configured():
            raise HubstyleError("training.report_to lists 'wandb', but wandb is not configured: run `wandb login`, "
                                "set WANDB_API_KEY, or set WANDB_MODE=offline to log to RUN/logs/wandb only")


class Tracker:
    """The run's trackers: ``log(metrics, step)`` sends metrics to each, ``finish()`` closes them (a ``with`` block
    does it too). With no tracker, both do nothing."""

    def __init__(self, backends: Sequence[Any] = (), destinations: Sequence[str] = ()):
        self.backends = list(backends)
        self.destinations = list(destinations)  # where each backend writes, in words (for the run's log)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Return None after logging ``metrics`` (name -> number) at ``step`` to every tracker."""
        values = {name: float(value) for name, value in metrics.items() if value is not None}
        for backend in self.backends:
            backend.log(values, step)

    def finish(self) -> None:
        """Return None after flushing and closing every tracker."""
        backends, self.backends = self.backends, []
        for backend in backends:
            backend.finish()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def open_tracker(
    report_to: Sequence[str], run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None, *,
    mode: str = "new",
) -> Tracker:
    """Return the Tracker of run folder ``run_dir`` for the trackers in ``report_to`` (``config``: the run config,
    recorded by trackio and wandb).

    ``mode`` 'new' starts the run's logs over (a fresh training run: earlier event files go, whatever ``report_to``
    says, so no stale curve is published), 'resume' continues them from the first step logged (a resumed training
    run: TensorBoard drops what the interrupted run logged from that step on; trackio keeps those rows beside the new
    ones, and wandb ignores steps below the last one it saw), 'append' adds to them (the evaluation).
    """
    if mode not in MODES:
        raise HubstyleError(f"tracking mode '{mode}' is not one of {', '.join(MODES)}")
    if not is_main_process():
        return Tracker()
    layout = RunLayout(Path(run_dir))
    events = layout.logs / TENSORBOARD_DIR
    if mode == "new":
        for old in events.glob(f"*{EVENTS_MARK}*") if events.is_dir() else ():
            old.unlink()
        (layout.logs / STATE_FILE).unlink(missing_ok=True)
    wanted = [name for name in dict.fromkeys(report_to) if name != "none"]
    if not wanted:
        return Tracker()
    check_report_to(wanted)
    state = _read_state(layout.logs / STATE_FILE)
    state.setdefault("name", f"{layout.root.resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}")
    plain_config = json.loads(json.dumps(dict(config or {}), default=str))
    backends, destinations = [], []
    for name in wanted:
        if name == "tensorboard":
            backends.append(_TensorBoard(events, purge=mode == "resume"))
            destinations.append(f"TensorBoard event files in {events} (tensorboard --logdir {events})")
        elif name == "trackio":
            backends.append(_Trackio(state, plain_config))
            destinations.append(f"trackio run '{state['name']}' in project '{PROJECT}' (trackio show --project "
                                f"{PROJECT})")
        else:
            backends.append(_Wandb(state, layout.logs, plain_config))
            destinations.append(f"wandb run '{state['name']}' in project '{PROJECT}' (files in {layout.logs}/wandb)")
    layout.logs.mkdir(parents=True, exist_ok=True)
    atomic_write(layout.logs / STATE_FILE, json.dumps(state, indent=2) + "\n")
    return Tracker(backends, destinations)


def step_metrics(record: Mapping[str, Any], tokens_per_second: float) -> dict[str, float]:
    """Return one training step's metrics under Trainer's names, from the loop's history ``record``."""
    metrics = {"train/loss": record["loss"], "train/learning_rate": record["lr"],
               "train/tokens_per_second": tokens_per_second}
    if record.get("val_loss") is not None:
        metrics["eval/loss"] = record["val_loss"]
    return metrics


def evaluation_metrics(facts: "RunFacts") -> dict[str, float]:
    """Return the run's evaluation figures (the tuned model's, and the base's as ``eval/base_*``) by Trainer-style
    names: style rate, relevance, held-out perplexities, the classifier's macro-F1; a section the run did not
    measure is left out."""
    figures: dict[str, float] = {}
    sides = (("", "tuned"), ("base_", "base"))
    if facts.style_rate is not None:
        for prefix, side in sides:
            figures[f"eval/{prefix}style_rate"] = getattr(facts.style_rate, side).rate
    if facts.answers is not None:
        for prefix, side in sides:
            figures[f"eval/{prefix}relevance"] = getattr(facts.answers, side).relevance.mean
    if facts.perplexity is not None:
        for part in ("style", "generic"):
            for prefix, side in sides:
                figures[f"eval/{prefix}perplexity_{part}"] = getattr(getattr(facts.perplexity, part), side)
    if facts.classifier is not None:
        figures["eval/classifier_macro_f1"] = facts.classifier.macro_f1
    return figures


def published_event_files(run_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """Return (file, name to publish it under) of the run's TensorBoard event files, oldest first; the published
    names keep TensorBoard's ``events.out.tfevents.<time>`` and drop this machine's host name and process id."""
    events = RunLayout(Path(run_dir)).logs / TENSORBOARD_DIR
    files = list(events.glob(f"*{EVENTS_MARK}*")) if events.is_dir() else []

    def written(path: Path) -> tuple[int, int]:  # SummaryWriter's names: events.out.tfevents.<time>.<host>.<pid>.<n>
        parts = path.name.split(".")
        time_part = parts[3] if len(parts) > 3 else ""
        return (int(time_part) if time_part.isdigit() else 0), (int(parts[-1]) if parts[-1].isdigit() else 0)

    files.sort(key=written)
    return [(path, f"events.out.{EVENTS_MARK}.{written(path)[0]}.hubstyle.{i:03d}") for i, path in enumerate(files)]


# --------------------------------------------------------------------------------------------------- backends


class _TensorBoard:
    """TensorBoard event files through torch's SummaryWriter (opened at the first log, which 'resume' purges from)."""

    def __init__(self, folder: Path, *, purge: bool):
        from torch.utils.tensorboard import SummaryWriter

        self._open = lambda step: SummaryWriter(log_dir=str(folder), purge_step=step if purge else None)
        self._writer = None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            self._writer = self._open(step)
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, global_step=step)

    def finish(self) -> None:
        if self._writer is not None:
            self._writer.close()


class _Trackio:
    """A trackio run in its local store; the run folder's later stages add to the same run (resume='allow')."""

    def __init__(self, state: dict, config: dict):
        import trackio

        resume = "allow" if state.get("trackio") == state["name"] else "never"
        with _quiet():  # trackio prints its banner and dashboard hints; the run's log says where the run is
            self._run = trackio.init(project=PROJECT, name=state["name"], config=config, resume=resume, embed=False,
                                     auto_log_cpu=False, auto_log_gpu=False)
        state["trackio"] = state["name"]

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def finish(self) -> None:
        import trackio

        with _quiet():
            trackio.finish()


class _Wandb:
    """A Weights & Biases run (files under RUN/logs/wandb/), resumed by id by the run folder's later stages."""

    def __init__(self, state: dict, folder: Path, config: dict):
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=PROJECT, name=state["name"], id=state.get("wandb"), resume="allow",
                               dir=str(folder), config=config)
        state["wandb"] = self._run.id  # wandb names a new run; the evaluation resumes it by this id

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def finish(self) -> None:
        self._run.finish()


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _wandb_configured() -> bool:
    """Return whether wandb can log without asking: an API key, a logged-in netrc entry, or an offline mode."""
    import netrc

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE", "").lower() in WANDB_OFFLINE_MODES:
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield
