"""Plots of docs/validation.md, drawn from the JSON files that ``benchmarks.validation_package`` writes.

Measures nothing and needs no data beyond those files; takes seconds. Each plot is drawn from the
files the results folder holds and skipped where they are absent:

* ``package_classcell.json`` (``--parts classcell``): validation_classcell.png (detection by cell and
  class) and validation_pvalues.png (flag rate against alpha);
* ``package_classcell_inject.json`` (the same with ``--injections ... --tag inject``):
  validation_injection_classcell.png;
* ``package_blockswaps[_N].json`` (``--parts swaps --batch-conversations N``): validation_batchsize.png;
* ``arena_swaps_*.json`` (``benchmarks.validation_arena --parts swaps``): validation_arena_swaps.png (every swap's
  detection against the batch size);
* ``arena_cells*.json`` (``benchmarks.validation_arena --parts cells``): validation_arena_injection.png.

validation_arena_shifts.png is drawn by ``benchmarks.validation_shifts --plot`` from the figures it computes.

    python -m benchmarks.validation_plots results/validation --out docs/img
"""

from __future__ import annotations

import json
import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

def classcell_plot(cc: dict, out: Path) -> Path:
    """Detection at alpha by (cell class, change): a heatmap with the numbers written in."""
    cells = sorted({k.split(" <- ")[0] for k in cc["by_cell_and_kind"]})
    columns = ["null"] + [f"class:{c}" for c in cells] + ["refusal"]
    grid = np.full((len(cells), len(columns)), np.nan)
    for i, cell in enumerate(cells):
        for j, kind in enumerate(columns):
            got = cc["by_cell_and_kind"].get(f"{cell} <- {kind}")
            if got:
                grid[i, j] = got["rate"]
    fig, ax = plt.subplots(figsize=(8.2, 4.2))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(len(cells)):
        for j in range(len(columns)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if grid[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(columns)), ["approved\n(null)"] + cells + ["refusal"], rotation=35, ha="right",
                  fontsize=8)
    ax.set_yticks(range(len(cells)), [f"{c} cell" for c in cells], fontsize=8)
    ax.set_xlabel("what the test model's answer was replaced by")
    ax.set_title(f"Flagged at alpha {cc['alpha']}: one-class cells, {cc['splits']} splits, "
                 f"{cc['null_by_baseline']['n_baselines']} baselines ({cc['scorer']})", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(out / "validation_classcell.png", dpi=90)
    plt.close(fig)
    return out / "validation_classcell.png"


def pvalues_plot(cc: dict, out: Path) -> Path:
    """The flag rate had the baselines been asked for each alpha, against alpha."""
    by_alpha = cc["rate_by_alpha"]
    alphas = np.array(by_alpha["alphas"])
    n_cal = max(cc["n_calibration_models"], key=lambda n: cc["n_calibration_models"][n])
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    ax = axes[0]
    ax.plot(alphas, alphas, color="k", lw=0.8, label="alpha")
    ax.step(alphas, np.floor(alphas * (int(n_cal) + 1) + 1e-9) / (int(n_cal) + 1), where="post", color="grey",
            lw=0.8, ls="--", label=f"attainable level, {n_cal} calibration units")
    ax.plot(alphas, by_alpha["null"], marker="o", ms=3, drawstyle="steps-post", label="approved outputs (null)")
    ax.set_xlabel("alpha")
    ax.set_ylabel("share flagged")
    ax.set_title("Level: approved outputs of held-out models", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for group, label in (("other_class", "answer of another class"), ("refusal", "refusal")):
        if group in by_alpha:
            ax.plot(alphas, by_alpha[group], marker="o", ms=3, drawstyle="steps-post", label=label)
    ax.axvline(0.05, color="k", lw=0.8, ls=":")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("alpha")
    ax.set_title("Power against alpha", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation_pvalues.png", dpi=90)
    plt.close(fig)
    return out / "validation_pvalues.png"


def _rates(ax, xs, got: list[dict], **style: object) -> None:  # type: ignore[no-untyped-def]
    """Rates (``benchmarks.study.rate`` dicts) at ``xs`` with their 95 % intervals as error bars."""
    ax.errorbar(xs, [g["rate"] for g in got],
                yerr=[[g["rate"] - g["ci95"][0] for g in got], [g["ci95"][1] - g["rate"] for g in got]],
                capsize=2, **style)


def injection_classcell_plot(cc: dict, out: Path) -> Path:
    """Detection of injected off-policy sentences against their number and position, with 95 % intervals."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for offset, (where, marker) in zip((-0.12, 0.0, 0.12), (("start", "o"), ("middle", "s"), ("end", "^"))):
        xs = [n for n in (1, 3, 6) if f"inject_{where}_{n}" in cc]
        if not xs:
            continue
        got = [cc[f"inject_{where}_{n}"] for n in xs]
        _rates(ax, np.array(xs) + offset, got, marker=marker, label=where)
    ax.axhline(cc["null"]["rate"], color="k", lw=0.8, label="approved outputs")
    ax.set_xlabel("injected off-policy sentences")
    ax.set_ylabel(f"flagged at alpha {cc['alpha']}")
    ax.set_xticks([1, 3, 6])
    ax.set_ylim(0, 1)
    ax.set_title(f"One-class cells, {cc['null_by_baseline']['n_baselines']} baselines; bars: 95 % over outputs, "
                 "too narrow", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation_injection_classcell.png", dpi=90)
    plt.close(fig)
    return out / "validation_injection_classcell.png"


def batchsize_plot(runs: dict[int, dict], out: Path) -> Path:
    """Batch detection of each model swap, and of the approved model's own outputs, against batch size."""
    sizes = sorted(runs)
    labels = [k for k in runs[sizes[0]] if " -> " in k]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label in labels:
        got = [runs[n][label]["batch"] for n in sizes]
        _rates(ax, [2 * n for n in sizes], got, marker="o", label=label)
    null_k = [sum(v["batch"]["k"] for k, v in runs[n].items() if "(null" in k) for n in sizes]
    null_n = [sum(v["batch"]["n"] for k, v in runs[n].items() if "(null" in k) for n in sizes]
    ax.plot([2 * n for n in sizes], np.array(null_k) / np.array(null_n), color="k", marker="x",
            label="approved models' own outputs")
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.axhline(runs[sizes[0]]["alpha"], color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xticks([2 * n for n in sizes], [str(2 * n) for n in sizes])
    ax.minorticks_off()
    ax.set_ylim(0, 1)
    ax.set_xlabel("outputs in the batch (two turns per conversation)")
    ax.set_ylabel(f"batches flagged at alpha {runs[sizes[0]]['alpha']}")
    ax.legend(fontsize=6)
    ax.set_title("Model swaps as a batch, through the package; the approved model's other conversations "
                 "(80 in all) build the baseline", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation_batchsize.png", dpi=90)
    plt.close(fig)
    return out / "validation_batchsize.png"


def arena_swaps_plot(runs: list[dict], out: Path) -> Path:
    """Batch detection of every swap of the arena sets against the batch size, with the pooled null."""
    fig, ax = plt.subplots(figsize=(9.6, 4.4))
    null_k: dict[int, int] = {}
    null_n: dict[int, int] = {}
    for run in runs:
        for label, by_size in run.items():
            if not isinstance(by_size, dict) or not all(k.isdigit() for k in by_size):
                continue
            sizes = sorted(int(k) for k in by_size)
            if "(null" in label:
                for n in sizes:
                    null_k[n] = null_k.get(n, 0) + by_size[str(n)]["batch"]["k"]
                    null_n[n] = null_n.get(n, 0) + by_size[str(n)]["batch"]["n"]
                continue
            if len(sizes) < 2:
                continue
            rates = [by_size[str(n)]["batch"]["rate"] for n in sizes]
            style = ":" if label.endswith("llama-13b") else "-"
            ax.plot(sizes, rates, marker="o", ls=style, lw=1.2, ms=3, label=label.replace("arena-", ""),
                    color=plt.get_cmap("tab20")(len(ax.lines) % 20))
    if null_n:
        sizes = sorted(null_n)
        ax.plot(sizes, [null_k[n] / null_n[n] for n in sizes], color="k", marker="x",
                label="null: own held-out answers")
        ax.axhline(0.05, color="k", lw=0.8, ls=":")
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ticks = sorted({int(k) for run in runs for v in run.values() if isinstance(v, dict) for k in v if k.isdigit()})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("outputs in the batch (one per held-out prompt)")
    ax.set_ylabel("batches flagged at alpha 0.05")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Silent model swaps as a batch, through the package (conditional test); the approved model's "
                 "other prompts build the baseline", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation_arena_swaps.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out / "validation_arena_swaps.png"


def arena_injection_plot(cells: dict, out: Path) -> Path:
    """Per-output detection of injected off-policy sentences by number and position, one-model one-class cells."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for where in ("start", "middle", "end"):
        ns = [n for n in (1, 3, 6) if f"inject_{where}_{n}" in cells]
        if not ns:
            continue
        got = [cells[f"inject_{where}_{n}"]["detect"] for n in ns]
        _rates(ax, ns, got, marker="o", label=where)
    ax.axhline(cells["null"]["detect"]["rate"], color="k", lw=0.8, ls=":", label="approved answers (null)")
    ax.set_xticks([1, 3, 6])
    ax.set_ylim(0, 1)
    ax.set_xlabel("off-policy sentences injected")
    ax.set_ylabel("outputs flagged at alpha 0.05")
    ax.legend(fontsize=7)
    ax.set_title("One model, one class (arena-hard-v2.0): injected sentences by position", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "validation_arena_injection.png", dpi=90)
    plt.close(fig)
    return out / "validation_arena_injection.png"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation_plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="folder holding validation_package's JSON files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder the PNG files are written to (docs/img for the documentation)")
    args = parser.parse_args()
    folder = args.results
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder: give the --out folder of benchmarks.validation_package")
    args.out.mkdir(parents=True, exist_ok=True)
    drawn: list[Path] = []
    if (folder / "package_classcell.json").exists():
        cc = json.loads((folder / "package_classcell.json").read_text())
        drawn.append(classcell_plot(cc, args.out))
        if "rate_by_alpha" in cc:
            drawn.append(pvalues_plot(cc, args.out))
    if (folder / "package_classcell_inject.json").exists():
        drawn.append(injection_classcell_plot(json.loads((folder / "package_classcell_inject.json").read_text()),
                                              args.out))
    runs = [json.loads(f.read_text()) for f in folder.glob("package_blockswaps*.json") if "pooled" not in f.name]
    swaps = {int(run["batch_conversations"]): run for run in runs}
    if swaps:
        drawn.append(batchsize_plot(swaps, args.out))
    arena = [json.loads(f.read_text()) for f in sorted(folder.glob("arena_swaps*.json"))]
    if arena:
        drawn.append(arena_swaps_plot(arena, args.out))
    cells = sorted(folder.glob("arena_cells*.json"))
    if cells:
        drawn.append(arena_injection_plot(json.loads(cells[0].read_text()), args.out))
    if not drawn:
        print(f"nothing to draw: {folder} holds none of the files listed in --help")
    for png in drawn:
        print(png, png.stat().st_size)

if __name__ == "__main__":
    main()
