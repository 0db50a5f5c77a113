"""The `hubstyle` command: thin wrappers that parse arguments, call the library and print."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from hubstyle.errors import HubstyleError

app = typer.Typer(
    help="Give language models a writing style, measure it, and publish it to the Hugging Face Hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library logs (like HUBSTYLE_DEBUG=1)."),
) -> None:
    """Options before the command; `main` reads --debug from the command line before the command runs."""



@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Run folder to write (base/, adapter/, metrics.json)."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="OWNER/NAME the publish folders point at."),
    push: bool = typer.Option(False, "--push", help="Also push the repos (needs --repo-id and a token)."),
    private: bool = typer.Option(False, "--private", help="Create pushed repos private."),
    tiny: bool = typer.Option(False, "--tiny", help="Pretrain a tiny GPT here instead of using SmolLM2-135M-Instruct."),
) -> None:
    """Offline end to end: SmolLM2 (or --tiny) Shakespeare LoRA, classifier, evaluation, cards; base vs tuned."""
    import json

    from hubstyle.quickstart import quickstart as run_quickstart

    if push and not repo_id:
        raise HubstyleError("--push needs --repo-id OWNER/NAME")
    result = run_quickstart(out, repo_id=repo_id, push=push, private=private, tiny=tiny)
    typer.echo("")
    for row in json.loads(result.layout.demo_table.read_text(encoding="utf-8"))["rows"][:4]:
        typer.echo(f"PROMPT: {row['prompt']}\n  base : {row['base']}\n  tuned: {row['tuned']}\n")
    typer.echo(f"done in {result.manifest.seconds:.0f}s; metrics in {result.layout.metrics}, "
               f"each stage's time and peak memory in {result.layout.manifest}")
    typer.echo(f"repo folders with cards: {result.layout.publish}")
    typer.echo(f"launch the Space on this run: hubstyle space run {out}")


@app.command()
def pretrain(
    out: Path = typer.Option(Path("runs/tiny-base"), "--out", help="Folder for the tiny base model."),
    corpus: str = typer.Option("wikitext", help="Generic corpus: a named corpus, a file, or hf:owner/name."),
    steps: int = typer.Option(1000, help="Maximum optimisation steps."),
    minutes: Optional[float] = typer.Option(None, help="Stop after this many minutes."),
) -> None:
    """Pretrain the tiny GPT-style base (tokenizer + model) from scratch, with a bigram baseline to compare."""
    from hubstyle.config import PretrainConfig
    from hubstyle.dataset import generic_splits
    from hubstyle.pretrain import pretrain_base

    cfg = PretrainConfig(corpus=corpus, max_steps=steps, time_budget_s=minutes * 60 if minutes else None)
    parts = generic_splits(corpus, cfg.seed)
    report = pretrain_base(parts.train, parts.validation, out, cfg)
    typer.echo(
        f"tiny base saved to {out}: validation loss {report.val_loss:.3f} vs bigram {report.bigram_val_loss:.3f} "
        f"({report.steps} steps, {report.seconds:.0f}s, {report.tokens_per_second:,.0f} tokens/s)"
    )


@app.command()
def train(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in OUTPUT_DIR/checkpoints "
                                "(refused if made with another config, data or max_steps; without it, a fresh run)."),
) -> None:
    """Train the style adapter (or full model) that CONFIG describes; writes OUTPUT_DIR/adapter and metrics.json."""
    from hubstyle.config import load_config
    from hubstyle.fsio import is_main_process
    from hubstyle.runner import run

    result = run(load_config(config), resume=resume)
    if not is_main_process():
        return  # the main process reports for every rank
    loss = result.metrics.get("heldout_loss", {}).get("style")
    if loss:
        typer.echo(f"held-out style loss: base {loss['base']:.3f} -> tuned {loss['tuned']:.3f}")
    typer.echo(f"metrics in {result.layout.metrics}")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="Text to continue."),
    base: str = typer.Option(..., "--base", help="Base model folder or Hub id."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Style adapter folder or Hub id; base vs tuned side by side."),
    max_new_tokens: int = typer.Option(60, help="Tokens to generate."),
) -> None:
    """Continue PROMPT with the base model, and with the adapter when one is given (greedy, reproducible)."""
    from hubstyle.models import load_base, load_tokenizer
    from hubstyle.pipeline import side_by_side

    if adapter:
        plain, tuned = side_by_side(base, adapter, [prompt], max_new_tokens)[0]
        typer.echo(f"base : {plain}\ntuned: {tuned}")
        return
    from hubstyle.evaluate.generation import generate as continue_prompts

    (text,) = continue_prompts(load_base(base), load_tokenizer(base), [prompt], max_new_tokens=max_new_tokens)
    typer.echo(text)


@app.command()
def merge(
    base: str = typer.Option(..., "--base", help="Base model folder or Hub id."),
    adapter: Path = typer.Option(..., "--adapter", help="Adapter folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the merged model."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Merge an adapter into a full-precision copy of its base and save a standard model folder."""
    from hubstyle.merge import merge_adapter

    report = merge_adapter(base, adapter, out, overwrite=overwrite)
    typer.echo(f"merged model saved to {report.out_dir}")
    for note in report.notes:
        typer.echo(f"note: {note}")


@app.command()
def blend(
    base: str = typer.Option(..., "--base", help="Base model folder or Hub id."),
    adapter: list[str] = typer.Option(..., "--adapter", help="NAME=FOLDER, once per adapter."),
    weight: Optional[list[float]] = typer.Option(None, "--weight", help="One weight per adapter, in the same order."),
    out: Path = typer.Option(..., "--out", help="Folder for the blended adapter (with --sweep: the sweep's JSON and plot)."),
    combination: Optional[str] = typer.Option(
        None, help="peft combination type: linear, cat, svd, ties, dare_linear, ... (default: linear; cat with --sweep)."
    ),
    density: Optional[float] = typer.Option(None, help="Density for ties/dare/magnitude_prune methods."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    sweep: bool = typer.Option(False, "--sweep", help="Sweep the weight of the first of two adapters from 0 to 1 instead."),
    classifier: Optional[str] = typer.Option(None, "--classifier", help="--sweep: style classifier folder knowing both NAMEs."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="--sweep: prompt file, one per line (default: hubstyle's)."),
    heldout: list[str] = typer.Option(
        [], "--heldout", help="--sweep: NAME=CORPUS held-out text of a style (default: the corpus called NAME)."
    ),
    generic: str = typer.Option("wikitext", help="--sweep: generic corpus scored for perplexity."),
    grid: str = typer.Option("0,0.25,0.5,0.75,1", help="--sweep: weights of the first adapter, comma-separated."),
    max_new_tokens: int = typer.Option(48, help="--sweep: tokens generated per prompt."),
    min_new_tokens: Optional[int] = typer.Option(None, help="--sweep: generate at least this many tokens per prompt."),
    greedy: bool = typer.Option(False, "--greedy", help="--sweep: greedy decoding instead of seeded sampling (T 0.8, top-p 0.95)."),
) -> None:
    """Blend style adapters with weights (peft add_weighted_adapter) into a new adapter folder, or sweep two."""
    adapters = _name_value_pairs("--adapter", adapter)
    if sweep:
        from hubstyle.evaluate.prompts import load_prompts
        from hubstyle.evaluate.sweep import SWEEP_JSON, SWEEP_PLOT, blend_sweep, sweep_table, sweep_texts

        if weight:
            raise HubstyleError("--weight has no effect with --sweep; give the weights with --grid (e.g. 0,0.5,1)")
        if not classifier:
            raise HubstyleError("--sweep needs --classifier FOLDER, a style classifier that knows both adapter names")
        try:
            weights = [float(w) for w in grid.split(",") if w.strip()]
        except ValueError:
            raise HubstyleError(f"--grid {grid!r} must be comma-separated numbers such as 0,0.5,1") from None
        sources = {name: name for name in adapters} | _name_value_pairs("--heldout", heldout)
        heldout_texts, generic_texts = sweep_texts(sources, generic=generic)
        result = blend_sweep(
            base, adapters, classifier=classifier, prompts=load_prompts(prompts), heldout=heldout_texts,
            generic_texts=generic_texts, out_dir=out, grid=weights, combination_type=combination or "cat",
            density=density, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=not greedy,
        )
        typer.echo(sweep_table(result))
        typer.echo(f"sweep written to {out / SWEEP_JSON} and {out / SWEEP_PLOT}")
        return

    from hubstyle.merge import blend_adapters

    if not weight:
        raise HubstyleError("blend needs one --weight per adapter (or --sweep to sweep two adapters)")
    report = blend_adapters(
        base, adapters, list(weight), out, combination_type=combination or "linear", density=density,
        overwrite=overwrite,
    )
    typer.echo(f"blend saved to {report.out_dir} ({report.combination_type}, rank {report.rank})")
    for note in report.notes:
        typer.echo(f"note: {note}")


def _name_value_pairs(option: str, items: list[str]) -> dict[str, str]:
    """Return {NAME: VALUE} of ``NAME=VALUE`` option values; a malformed one is a one-line error."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise HubstyleError(f"{option} {item!r} must look like NAME=VALUE (e.g. shakespeare=runs/a/adapter)")
        pairs[name] = value
    return pairs


@app.command()
def restyle(
    text: Optional[str] = typer.Argument(None, help="Text to rewrite; omit it to read --file or standard input."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Restyler folder or Hub repo (default: the shipped one)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Rewrite this UTF-8 text file instead."),
    style_bias: Optional[float] = typer.Option(None, "--style-bias", help="Logit bias toward the style words (default: the restyler's own; 0: none)."),
    beams: Optional[int] = typer.Option(None, "--beams", help="Beams searched (default: the restyler's own; 1: greedy)."),
) -> None:
    """Rewrite plain text in the style (default: Shakespeare's English), sentence by sentence, lines kept."""
    from hubstyle.restyle.model import load_restyler

    if text is not None and file is not None:
        raise HubstyleError("give the text or --file, not both")
    if file is not None:
        if not file.is_file():
            raise HubstyleError(f"--file '{file}' not found")
        text = file.read_text(encoding="utf-8")
    elif text is None:
        if sys.stdin.isatty():
            raise HubstyleError("no text: give it as an argument, with --file, or on standard input")
        text = sys.stdin.read()
    if not text.strip():
        raise HubstyleError("the text is empty; give some words to rewrite")
    if beams is not None and beams < 1:
        raise HubstyleError(f"--beams is {beams}; give 1 (greedy) or more")
    typer.echo(load_restyler(adapter).restyle(text.rstrip("\n"), style_bias=style_bias, num_beams=beams))


restyler_app = typer.Typer(help="Restylers: adapters that rewrite plain text in a style, learnt from parallel pairs.",
                           no_args_is_help=True)
app.add_typer(restyler_app, name="restyler")


@restyler_app.command("build")
def restyler_build(
    config: Path = typer.Argument(..., help="Restyler config (YAML), e.g. data/configs/restyler.yaml."),
    resume: bool = typer.Option(False, "--resume", help="Continue training from the newest checkpoint."),
    ship: Optional[Path] = typer.Option(None, "--ship", help="Also copy both repo folders here as restyler/ and distilled/ (hubstyle/shipped)."),
) -> None:
    """Train a restyler on parallel pairs, judge it on the held-out play, and write its repo folder with a card."""
    from hubstyle.restyle.build import load_restyler_config
    from hubstyle.restyle.run import build_restyler

    cfg = load_restyler_config(config)
    build_restyler(cfg, resume=resume, ship=ship, log=typer.echo)
    typer.echo(f"restyler repo folder: {cfg.out / 'publish' / 'restyler'}")


@restyler_app.command("tune")
def restyler_tune(
    config: Path = typer.Argument(..., help="Restyler config (YAML) of a built restyler."),
    bias: str = typer.Option("0,1,2,3", "--bias", help="Style biases to compare, comma-separated."),
    beams: str = typer.Option("1,4", "--beams", help="Beam counts to compare, comma-separated."),
) -> None:
    """Score each decoding (style bias x beams) on lines of the training plays never trained on, never the held-out
    play, and suggest one by a fixed rule."""
    from hubstyle.restyle.build import load_restyler_config
    from hubstyle.restyle.run import tune_restyler

    biases, beam_counts = _numbers(bias, float, "--bias"), _numbers(beams, int, "--beams")
    if any(n < 1 for n in beam_counts):
        raise HubstyleError(f"--beams takes counts of 1 or more, got {beams!r}")
    cfg = load_restyler_config(config)
    sweep = tune_restyler(cfg, biases=biases, beams=beam_counts, log=typer.echo)
    typer.echo(f"copy baseline: BLEU {sweep['copy']['bleu']}, judged in style {sweep['copy']['style_rate']:.1%}; "
               f"Shakespeare's lines judged in style {sweep['reference']['style_rate']:.1%}; "
               f"written to {cfg.out / 'eval'}")
    pick = sweep["suggested"]
    typer.echo(f"suggested: style_bias {pick['style_bias']:g}, num_beams {pick['num_beams']} ({pick['rule']}); "
               f"set them in {config}, then build again")


def _numbers(text: str, kind, option: str) -> list:
    """Return the comma-separated numbers of an option, or raise one line naming it."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise HubstyleError(f"{option} takes comma-separated numbers, got {text!r}")
    return values


classifier_app = typer.Typer(help="The style classifier that measures style rate.", no_args_is_help=True)
space_app = typer.Typer(help="The Gradio Space: base vs tuned side by side.", no_args_is_help=True)
app.add_typer(classifier_app, name="classifier")
app.add_typer(space_app, name="space")
export_app = typer.Typer(help="Files for other runtimes: GGUF for llama.cpp and Ollama.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@app.command()
def evaluate(
    base: str = typer.Option(..., "--base", help="Base model folder or Hub id."),
    adapter: str = typer.Option(..., "--adapter", help="Style adapter folder or Hub id."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json, demo_table.json and plots."),
    classifier: Optional[str] = typer.Option(None, "--classifier", help="Classifier folder or id (default: train one)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompt file, one per line (default: hubstyle's)."),
    style: str = typer.Option("shakespeare", help="Style corpus (its held-out split is scored)."),
    generic: str = typer.Option("wikitext", help="Modern-English corpus (forgetting is measured on it)."),
    max_new_tokens: int = typer.Option(48, help="Tokens generated per prompt."),
) -> None:
    """Measure an adapter: style rate of base vs tuned (95% CIs), held-out and generic perplexity, demo table."""
    from hubstyle.config import ClassifierConfig, CorpusConfig, EvaluationConfig, RunConfig
    from hubstyle.pipeline import evaluate_adapter

    cfg = RunConfig(
        base_model=base, output_dir=str(out), corpora=[CorpusConfig(source=style)], generic_corpus=generic,
        classifier=ClassifierConfig(path=classifier),
        evaluation=EvaluationConfig(prompts=str(prompts) if prompts else None, max_new_tokens=max_new_tokens),
    )
    metrics = evaluate_adapter(cfg, adapter)
    for side in ("base", "tuned"):
        r = metrics["style_rate"][side]
        typer.echo(f"style rate {side:5}: {r['rate']:.1%} (95% CI {r['low']:.1%}-{r['high']:.1%}, n={r['n']})")
    for part, sides in metrics["perplexity"].items():
        typer.echo(f"perplexity {part:7}: base {sides['base']:.2f} -> tuned {sides['tuned']:.2f}")
    typer.echo(f"metrics in {out / 'metrics.json'}")


@classifier_app.command("train")
def classifier_train(
    config: Optional[Path] = typer.Argument(None, help="A run config: its corpora are the classes (plus 'other')."),
    style: list[str] = typer.Option([], "--style", help="A style corpus (repeatable); used when no CONFIG is given."),
    other: list[str] = typer.Option(["wikitext", "chatterbot"], "--other",
                                    help="A modern-English register of the 'other' class (repeatable)."),
    backbone: Optional[str] = typer.Option(None, help="Encoder id or folder (default: the packaged MiniLM-L6)."),
    out: Path = typer.Option(..., "--out", help="Folder for the classifier (loads with AutoModelForSequenceClassification)."),
) -> None:
    """Train a style classifier over labelled corpora; prints accuracy and macro-F1 on held-out blocks."""
    from hubstyle.config import ClassifierConfig, CorpusConfig, RunConfig, load_config
    from hubstyle.pipeline import train_style_classifier

    if config is not None:
        cfg = load_config(config)
    else:
        cfg = RunConfig(
            corpora=[CorpusConfig(source=s) for s in (style or ["shakespeare"])], generic_corpus=other[0],
            classifier=ClassifierConfig(backbone=backbone, other_corpora=list(other)),
        )
    report = train_style_classifier(cfg, out)
    typer.echo(f"classifier saved to {out}: labels {report['labels']}, accuracy {report['accuracy']:.3f}, "
               f"macro-F1 {report['macro_f1']:.3f}")
    for name, reg in (report.get("registers") or {}).items():
        typer.echo(f"  {name}: {reg['accuracy']:.3f} of {reg['n']} held-out passages called '{reg['label']}'")


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    from_stage: Optional[str] = typer.Option(None, "--from", help="Run this stage and all after it even if cached: "
                                             "data, base, train, evaluate, publish or push."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print which stages would run or be skipped, and why; "
                                 "write nothing."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="OWNER/NAME of the adapter repo (overrides push.repo_id)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Tag every pushed repo with this name (overrides push.tag)."),
    push: Optional[bool] = typer.Option(None, "--push/--no-push", help="--push: fail unless the push runs (repo id "
                                        "and token needed); --no-push: never push. Default: push when push.repo_id "
                                        "is set and a token exists."),
) -> None:
    """Run the whole chain CONFIG asks for (data, base, train, evaluate, publish, push), skipping unchanged stages."""
    from hubstyle.config import load_config
    from hubstyle.runner import run_config

    run_config(load_config(config), config_file=config, from_stage=from_stage, dry_run=dry_run, repo_id=repo_id,
               tag=tag, push=push, log=typer.echo)


@app.command()
def card(
    run_dir: Path = typer.Argument(..., help="A run folder (with metrics.json)."),
    repo_id: str = typer.Option("your-username/tiny-shakespeare", "--repo-id", help="OWNER/NAME the cards point at."),
) -> None:
    """Write the run's repo folders with their model cards under RUN_DIR/publish/ (nothing is pushed)."""
    from hubstyle.release import prepare_release

    for part in prepare_release(run_dir, repo_id):
        typer.echo(f"{part.kind:10} {part.folder}  ->  {part.repo_id}")


@app.command()
def push(
    run_dir: Path = typer.Argument(..., help="A run folder (with metrics.json)."),
    repo_id: str = typer.Option(..., "--repo-id", help="OWNER/NAME of the adapter repo; others get suffixes."),
    what: str = typer.Option("all", help="adapter, merged, classifier, gguf, space, base, dataset (the training set), "
                                         "or all (comma-separated)."),
    private: bool = typer.Option(False, "--private", help="Create the repos private."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change and the card; touch nothing."),
    tag: Optional[str] = typer.Option(None, help="Tag every pushed repo with this name (e.g. the release)."),
) -> None:
    """Push the run's repos to the Hub (token from HF_TOKEN or `hf auth login`); unchanged files are not re-sent."""
    from hubstyle.release import RELEASE_KINDS, push_release

    kinds = RELEASE_KINDS if what == "all" else tuple(w.strip() for w in what.split(",") if w.strip())
    push_release(run_dir, repo_id, kinds, private=private, tag=tag, dry_run=dry_run, log=typer.echo)


@space_app.command("build")
def space_build(
    run_dir: Path = typer.Argument(..., help="A run folder (with metrics.json and demo_table.json)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Space folder (default RUN_DIR/publish/space)."),
    repo_id: str = typer.Option("your-username/tiny-shakespeare", "--repo-id", help="OWNER/NAME of the adapter repo."),
) -> None:
    """Write the Space repo folder: README front matter, requirements.txt, app.py, config and demo table."""
    import shutil

    from hubstyle.fsio import atomic_folder
    from hubstyle.release import prepare_release

    (part,) = prepare_release(run_dir, repo_id, ("space",))
    if out is not None and out.resolve() != part.folder.resolve():
        with atomic_folder(out) as stage:
            shutil.copytree(part.folder, stage, dirs_exist_ok=True)
    typer.echo(f"Space folder: {out or part.folder} (pushes to spaces/{part.repo_id})")


@space_app.command("run")
def space_run(
    run_dir: Path = typer.Argument(..., help="A run folder: its base and adapter are loaded locally."),
    port: Optional[int] = typer.Option(None, help="Port (default: Gradio's)."),
) -> None:
    """Launch the Space locally on the run's base and adapter (127.0.0.1, no analytics, no share link)."""
    import json

    from hubstyle.bases import loadable_path
    from hubstyle.facts import load_facts
    from hubstyle.layout import RunLayout
    from hubstyle.space import SpaceSettings, launch
    from hubstyle.space_folder import demo_caption

    layout = RunLayout(run_dir)
    facts = load_facts(layout.root)
    table = json.loads(layout.demo_table.read_text(encoding="utf-8")) if layout.demo_table.is_file() else {}
    rows, decoding = table.get("rows") or [], table.get("decoding") or {}
    settings = SpaceSettings(
        base=loadable_path(facts.run.base_model),  # offline, the wheel's dequantized folder stands for the Hub id
        adapters={facts.run.style: str(layout.adapter)},
        demo_rows=rows, examples=[r["prompt"] for r in rows], chat=decoding.get("chat"),
        **({"demo_caption": demo_caption(decoding)} if rows else {}),
    )
    launch(settings, port=port, prevent_thread_lock=False)


@export_app.command("gguf")
def export_gguf(
    run_dir: Path = typer.Argument(..., help="A run folder (publish/merged/, model/ or adapter/) or a model folder."),
    quant: str = typer.Option("f16", "--quant", help="f16 or q8_0."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the GGUF and Modelfile (default RUN_DIR/gguf)."),
    lora: bool = typer.Option(False, "--lora", help="Also write the adapter alone as a LoRA GGUF."),
) -> None:
    """Write the merged model as one GGUF (tokenizer, chat template) with an Ollama Modelfile; --lora: the adapter too."""
    from hubstyle.export import export_gguf as export

    report = export(run_dir, quant, out, lora)
    typer.echo(f"{report.gguf}  {report.size_bytes / 1e6:.1f} MB ({report.quant}, from {report.source}, "
               f"{report.seconds:.0f}s)")
    if report.lora is not None:
        typer.echo(f"{report.lora}  {report.lora_size_bytes / 1e6:.1f} MB (LoRA; apply it on the base model's GGUF)")
    typer.echo(f"{report.modelfile}  (ollama create NAME -f {report.modelfile})")


@app.command()
def doctor() -> None:
    """Check this machine for the quickstart: versions, bf16 speed, CUDA, offline base, data, Hub token, memory, disk."""
    from hubstyle.doctor import diagnose

    report = diagnose()
    typer.echo("\n".join(report.lines()))
    if not report.ready:
        raise typer.Exit(1)


def _quiet_libraries() -> None:
    """Silence library chatter that says nothing to a hubstyle user (set HUBSTYLE_DEBUG=1 to see it)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    # bitsandbytes on a CPU without its optional `kernels` package; peft checking an offline base's vocabulary
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # logs "kernels-community" on CPUs without `kernels`
    warnings.filterwarnings("ignore", message=".*kernels-community.*")  # ... and also warns it, once per process
    warnings.filterwarnings("ignore", message=".*Could not find a config file in.*")
    warnings.filterwarnings("ignore", message=".*Unable to fetch remote file.*")
    warnings.filterwarnings("ignore", message=".*loss_type=None.*")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # retry chatter; a failed push ends in one line
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar for every model hubstyle opens


def _debug_requested(argv: list[str]) -> bool:
    """Return whether `--debug` comes before the command, or HUBSTYLE_DEBUG is set."""
    import itertools

    options = itertools.takewhile(lambda arg: arg.startswith("-"), argv)
    return os.environ.get("HUBSTYLE_DEBUG", "") not in ("", "0") or "--debug" in options


def error_line(err: Exception) -> str:
    """Return the one line the CLI prints for ``err``: a HubstyleError's message, else what went wrong and where."""
    if isinstance(err, HubstyleError):
        return " ".join(str(err).split("\n"))
    text = " ".join(str(err).split())
    if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in text or "os error 28" in text:
        where = f" while writing '{err.filename}'" if getattr(err, "filename", None) else ""
        return f"the disk is full (No space left on device){where}; free some space and run the command again"
    if isinstance(err, OSError) and err.strerror:
        where = f": '{err.filename}'" if err.filename else ""
        return f"{err.strerror}{where}"
    return f"unexpected {type(err).__name__}: {text[:300]} (run `hubstyle --debug ...` for the traceback)"


def main() -> None:
    """Run the CLI; any failure ends with one line on stderr and exit code 1 (`hubstyle --debug ...` or
    HUBSTYLE_DEBUG=1 shows the traceback instead)."""
    debug = _debug_requested(sys.argv[1:])
    if not debug:
        _quiet_libraries()
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the one place every failure becomes one line
        if debug:
            raise
        typer.echo(f"error: {error_line(err)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
