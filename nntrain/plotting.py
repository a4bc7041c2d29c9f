"""Learning curves as a PNG (matplotlib's Agg backend, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path

from nntrain.fsutil import atomic_write_bytes


def plot_history(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    """One panel per figure (loss, each metric): training and validation by epoch."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"epoch", "seconds", "learning_rate"}
    names = [k for k in history[0] if k not in skip and not k.startswith("val_")]
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(epochs, [row[name] for row in history], "o-", ms=3, label=f"train {name}")
        if f"val_{name}" in history[0]:
            ax.plot(epochs, [row[f"val_{name}"] for row in history], "s--", ms=3,
                    label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
