"""PNG plots for cards: loss curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_loss(history: list[dict], path: Path, *, title: str) -> Path:
    """Return `path` after drawing training loss (and validation loss where recorded) against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    tokens = [h["tokens"] for h in history]
    ax.plot(tokens, [h["loss"] for h in history], label="train loss", linewidth=1, alpha=0.8)
    val = [(h["tokens"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", markersize=3)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
