#!/usr/bin/env python3
"""plot.py RUN_DIR [OUT_DIR]: PNG plots of a run's metrics.jsonl (written by moe train beside
its checkpoints): loss (and validation loss), learning rate, throughput, and a heatmap of
tokens per expert over steps for each MoE layer. OUT_DIR defaults to RUN_DIR/plots."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files, no display
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    run = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(run, "plots")
    path = os.path.join(run, "metrics.jsonl")
    try:
        records = [json.loads(line) for line in open(path)]
    except (OSError, ValueError) as e:
        sys.exit(f"plot.py: error: {path}: {e}")
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    if not train:
        sys.exit(f"plot.py: error: {path}: no training steps recorded")
    os.makedirs(out, exist_ok=True)
    steps = [r["step"] for r in train]

    def line(name, ylabel, series):
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, xs, ys in series:
            ax.plot(xs, ys, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, name))
        plt.close(fig)
        print(os.path.join(out, name))

    line("loss.png", "loss (nats/token)", [("training", steps, [r["loss"] for r in train]),
                                            ("validation", [r["step"] for r in val], [r["val_loss"] for r in val])])
    line("lr.png", "learning rate", [("lr", steps, [r["lr"] for r in train])])
    line("throughput.png", "tokens/s", [("tokens/s", steps, [r["tokens_per_s"] for r in train])])
    layers = len(train[-1].get("expert_loads", []))
    for i in range(layers):
        grid = [r["expert_loads"][i] for r in train]  # steps x experts
        fig, ax = plt.subplots(figsize=(7, 4))
        im = ax.imshow(list(map(list, zip(*grid))), aspect="auto", origin="lower", interpolation="nearest",
                       extent=(steps[0], steps[-1], -0.5, len(grid[0]) - 0.5))
        ax.set_xlabel("step")
        ax.set_ylabel("expert")
        ax.set_title(f"tokens per expert, MoE layer {i}")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        name = os.path.join(out, f"expert_load_layer{i}.png")
        fig.savefig(name)
        plt.close(fig)
        print(name)


if __name__ == "__main__":
    main()
