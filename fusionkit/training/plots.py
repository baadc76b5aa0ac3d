"""Training-curve figure of one run (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path


def plot_history(history: list, path: str | Path, *, title: str = "") -> None:
    """Save a PNG with train/valid loss (left), validation Acc2 (middle) and MAE (right) per epoch."""
    from fusionkit.optional import require

    matplotlib = require("matplotlib", "the training-curve figure (curve.png)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    axes[0].plot(epochs, [h["valid_loss"] for h in history], marker="o", label="valid MSE")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[1].plot(epochs, [100 * h["valid"]["acc2_non0"] for h in history], marker="o", label="Acc2 (non0)")
    axes[1].plot(epochs, [100 * h["valid"]["acc2_has0"] for h in history], marker="o", label="Acc2 (has0)")
    axes[1].set_ylabel("valid accuracy (%)")
    axes[1].legend()
    axes[2].plot(epochs, [h["valid"]["mae"] for h in history], marker="o", color="C3")
    axes[2].set_ylabel("valid MAE")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    best = [h["epoch"] for h in history if h.get("improved")]
    if best:
        for ax in axes:
            ax.axvline(best[-1], color="grey", linestyle="--", linewidth=0.8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    from fusionkit.diskfull import writing

    try:
        with writing(path):
            fig.savefig(tmp, dpi=100)
            tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
