"""The `hubstyle` command: thin wrappers that parse arguments, call the library and print."""

from __future__ import annotations

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


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Run folder to write (base/, adapter/, metrics.json)."),
) -> None:
    """Offline end to end: pretrain a tiny base, train a Shakespeare LoRA, print base vs tuned side by side."""
    from hubstyle.evaluate.prompts import load_demo_prompts
    from hubstyle.pipeline import quickstart as run_quickstart
    from hubstyle.pipeline import side_by_side

    result = run_quickstart(out)
    base = result.metrics["run"]["base_model"]
    typer.echo("")
    for prompt, plain, tuned in side_by_side(base, result.layout.adapter, load_demo_prompts()[:4]):
        typer.echo(f"PROMPT: {prompt}\n  base : {plain}\n  tuned: {tuned}\n")
    typer.echo(f"done in {result.metrics['quickstart_seconds']:.0f}s; metrics in {result.layout.metrics}")


@app.command()
def pretrain(
    out: Path = typer.Option(Path("runs/tiny-base"), "--out", help="Folder for the tiny base model."),
    corpus: str = typer.Option("wikitext", help="Generic corpus: a named corpus, a file, or hf:owner/name."),
    steps: int = typer.Option(1000, help="Maximum optimisation steps."),
    minutes: Optional[float] = typer.Option(None, help="Stop after this many minutes."),
) -> None:
    """Pretrain the tiny GPT-style base (tokenizer + model) from scratch, with a bigram baseline to compare."""
    from hubstyle.config import PretrainConfig
    from hubstyle.data import load_corpus, split_blocks
    from hubstyle.pretrain import pretrain_base

    cfg = PretrainConfig(corpus=corpus, max_steps=steps, time_budget_s=minutes * 60 if minutes else None)
    parts = split_blocks(load_corpus(corpus).blocks, validation=0.05, test=0.0, seed=cfg.seed)
    report = pretrain_base(parts.train, parts.validation, out, cfg)
    typer.echo(
        f"tiny base saved to {out}: validation loss {report.val_loss:.3f} vs bigram {report.bigram_val_loss:.3f} "
        f"({report.steps} steps, {report.seconds:.0f}s, {report.tokens_per_second:,.0f} tokens/s)"
    )


@app.command()
def train(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in OUTPUT_DIR/checkpoints."),
) -> None:
    """Train the style adapter (or full model) that CONFIG describes; writes OUTPUT_DIR/adapter and metrics.json."""
    from hubstyle.config import load_config
    from hubstyle.pipeline import run

    result = run(load_config(config), resume=resume)
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
        _, plain, tuned = side_by_side(base, Path(adapter), [prompt], max_new_tokens)[0]
        typer.echo(f"base : {plain}\ntuned: {tuned}")
        return
    tokenizer, model = load_tokenizer(base), load_base(base)
    batch = tokenizer(prompt, return_tensors="pt").to(model.device)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    typer.echo(tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip())


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
    weight: list[float] = typer.Option(..., "--weight", help="One weight per adapter, in the same order."),
    out: Path = typer.Option(..., "--out", help="Folder for the blended adapter."),
    combination: str = typer.Option("linear", help="peft combination type: linear, cat, svd, ties, dare_linear, ..."),
    density: Optional[float] = typer.Option(None, help="Density for ties/dare/magnitude_prune methods."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Blend style adapters with weights (peft add_weighted_adapter) into a new adapter folder."""
    from hubstyle.merge import blend_adapters

    adapters = {}
    for item in adapter:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise HubstyleError(f"--adapter {item!r} must look like NAME=FOLDER")
        adapters[name] = folder
    report = blend_adapters(
        base, adapters, list(weight), out, combination_type=combination, density=density, overwrite=overwrite
    )
    typer.echo(f"blend saved to {report.out_dir} ({report.combination_type}, rank {report.rank})")
    for note in report.notes:
        typer.echo(f"note: {note}")


def main() -> None:
    """Run the CLI; bad input ends with one line on stderr and exit code 1 (HUBSTYLE_DEBUG=1 shows tracebacks)."""
    try:
        app()
    except HubstyleError as err:
        if os.environ.get("HUBSTYLE_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
