"""File and folder names of a run directory: the one place they are spelled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAINING_FACTS = "hubstyle_training.json"  # written into every adapter/model folder hubstyle trains
LOSS_HISTORY = "loss_history.json"
LOSS_PLOT = "loss.png"
METRICS = "metrics.json"  # the report a person reads; hubstyle reads RUN_FACTS back
RUN_FACTS = "run_facts.json"  # the typed record of the run (hubstyle.facts.RunFacts)
DEMO_TABLE = "demo_table.json"
CONFIG_COPY = "config.yaml"
MANIFEST = "run.json"  # how the run was made, stage by stage (hubstyle.manifest.RunManifest; `hubstyle run`)
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # a peft adapter's weights (save_pretrained's safetensors name)
ADAPTER_CONFIG = "adapter_config.json"  # a peft adapter's config (names its base: base_model_name_or_path)
RESTYLER_FACTS = "restyler.json"  # in a restyler's adapter folder: instruction, style, data, held-out play
SAMPLES = "samples.jsonl"  # the style samples the data stage made, one JSON object a line
PRETRAIN_REPORT = "pretrain_report.json"  # in RUN/base: how hubstyle pretrained the tiny base (hubstyle.pretrain)
CONFUSION_FILE = "confusion_matrix.png"  # in the classifier folder: its confusion matrix on held-out passages

# Files of a saved tokenizer (save_pretrained writes those its tokenizer has): a folder holding one has its own
# tokenizer. All but tokenizer_config.json hold the vocabulary, whose keys are tokens, not settings.
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_FILES = ("tokenizer.json", TOKENIZER_CONFIG, "vocab.json", "merges.txt", "tokenizer.model", "spiece.model")
# Pickle weights: torch.load runs code hidden in them, so hubstyle loads them only when the user opts in
# (HUBSTYLE_ALLOW_PICKLE=1) and never publishes them (STYLE: no pickles).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder (what `hubstyle quickstart --out DIR` and `hubstyle train` write)."""

    root: Path

    @property
    def base(self) -> Path:
        """The tiny base model hubstyle pretrained (when the run uses one)."""
        return self.root / "base"

    @property
    def adapter(self) -> Path:
        """The style LoRA adapter (peft folder)."""
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        """The fully fine-tuned model (methods `full` and `freeze_attention`)."""
        return self.root / "model"

    def trained(self, method: str) -> Path:
        """Return the folder training with ``method`` writes: the adapter for LoRA methods, else the whole model."""
        return self.adapter if method in ("lora", "qlora") else self.model

    @property
    def checkpoints(self) -> Path:
        """Training checkpoints for resume (never published)."""
        return self.root / "checkpoints"

    @property
    def classifier(self) -> Path:
        """The style classifier (a standard sequence-classification folder)."""
        return self.root / "classifier"

    @property
    def evaluation(self) -> Path:
        """Evaluation outputs: metrics, demo table, plots."""
        return self.root / "eval"

    @property
    def metrics(self) -> Path:
        """The run's metrics.json (schema in README.md)."""
        return self.root / METRICS

    @property
    def facts(self) -> Path:
        """The run's facts (hubstyle.facts.RunFacts), read by cards, publish and the Space."""
        return self.root / RUN_FACTS

    @property
    def demo_table(self) -> Path:
        """Base-vs-tuned demo table data."""
        return self.root / DEMO_TABLE

    @property
    def publish(self) -> Path:
        """Ready-to-push repo folders (each with its README card)."""
        return self.root / "publish"

    @property
    def gguf(self) -> Path:
        """GGUF exports for llama.cpp and Ollama, with their Modelfile (`hubstyle export gguf`)."""
        return self.root / "gguf"

    @property
    def manifest(self) -> Path:
        """The run manifest: config, data hashes, package versions, stage keys and timings (`hubstyle run`)."""
        return self.root / MANIFEST

    @property
    def data(self) -> Path:
        """The data stage's output: the style samples (before splitting), as `hubstyle run` made them."""
        return self.root / "data"

    @property
    def config(self) -> Path:
        """Copy of the run config."""
        return self.root / CONFIG_COPY

    @property
    def logs(self) -> Path:
        """Experiment-tracking logs (`training.report_to`): TensorBoard event files, wandb's folder, trackio's run."""
        return self.root / "logs"
