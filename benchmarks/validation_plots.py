"""Plots and markdown tables for docs/validation.md from the JSON that benchmarks/validation.py writes.

    /work/venv/bin/python benchmarks/validation_plots.py /tmp/validation   # writes docs/img/validation_*.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def null_plot(null: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, design in zip(axes, ("A_one_model", "B_all_models")):
        for key, marker in (("row", "o"), ("prompt", "s"), ("question", "^")):
            for score, ls in (("knn", "-"), ("combined", "--")):
                pts = [(int(k.split("|")[2]), v[score]) for k, v in null.items()
                       if k.startswith(f"{design}|{key}|")]
                if not pts:
                    continue
                pts.sort()
                ax.errorbar([p[0] for p in pts], [p[1]["rate"] for p in pts],
                            yerr=[[p[1]["rate"] - p[1]["ci95"][0] for p in pts],
                                  [p[1]["ci95"][1] - p[1]["rate"] for p in pts]],
                            marker=marker, ls=ls, capsize=2, label=f"{key} / {score}")
        ax.axhline(0.05, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks([10, 25, 50], ["10", "25", "50"])
        ax.minorticks_off()
        ax.set_title({"A_one_model": "A: one model, all classes", "B_all_models": "B: 32 models pooled"}[design],
                     fontsize=9)
        ax.set_xlabel("batch size")
    axes[0].set_ylabel("null rejection at 0.05 (Bonferroni)")
    axes[1].legend(fontsize=6, loc="center right")
    fig.tight_layout()
    fig.savefig(IMG / "validation_null.png", dpi=90)


def injection_plot(output: dict) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    for where, marker in (("start", "o"), ("middle", "s"), ("end", "^")):
        for score, ls in (("knn", "-"), ("combined", "--")):
            xs = [1, 3, 6]
            ys = [output["changes"][f"inject_{where}_{n}"][score]["detect_0.05"]["rate"] for n in xs]
            ax.plot(xs, ys, marker=marker, ls=ls, label=f"{where} / {score}")
    ax.axhline(0.05, color="k", lw=0.8)
    ax.set_xlabel("injected off-policy sentences")
    ax.set_ylabel("per-output detection, alpha 0.05")
    ax.set_xticks([1, 3, 6])
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(IMG / "validation_injection.png", dpi=90)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/validation")
    IMG.mkdir(parents=True, exist_ok=True)
    if (folder / "null.json").exists():
        null_plot(json.loads((folder / "null.json").read_text()))
    if (folder / "output.json").exists():
        injection_plot(json.loads((folder / "output.json").read_text()))
    for png in sorted(IMG.glob("validation_*.png")):
        print(png, png.stat().st_size)


if __name__ == "__main__":
    main()
