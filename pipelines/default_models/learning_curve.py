"""Held-out PSNR gain over zero-filling against training steps, from runs' ``val_log.csv``.

    python pipelines/default_models/learning_curve.py runs/curve/x2-s runs/curve/x2-m \
        --out docs/learning_curve.png

Each run's validation rows (the network, and the baselines at step 0) are the mean PSNR over the
held-out volumes of its ``data.val``; the gain is the network's PSNR minus the zero-filling one
(bicubic for bicubic-degradation runs). Draws one line per run, labelled with the run folder's
name and the network's parameter count, and prints the same numbers as a Markdown table. A run
started from another's weights (``train.init``) is drawn from the steps those had trained.

``--keep DIR`` copies each run's logs into ``DIR/<run name>/`` with a ``run.json`` of its
initial steps and parameter count, so that the curves stay in the repository without the
weights; such a folder can be drawn again in place of the run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from safetensors import safe_open  # noqa: E402


def read_curve(run: Path) -> tuple[list[int], list[float]]:
    """(steps, PSNR gain in dB) of one run's validations, counting its initial weights' steps."""
    with open(run / "val_log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    base = {r["method"]: float(r["psnr"]) for r in rows if r["step"] == "0"}
    reference = base.get("zerofill", base.get("bicubic"))
    if reference is None:
        raise SystemExit(f"{run / 'val_log.csv'}: no baseline row at step 0 (was data.val set?)")
    first = initial_steps(run)
    curve = [
        (first + int(r["step"]), float(r["psnr"]) - reference)
        for r in rows
        if r["method"] not in base
    ]
    return [s for s, _ in curve], [g for _, g in curve]


def initial_steps(run: Path) -> int:
    """Steps its initial weights had trained (``train.init``; 0 for a run from scratch), from
    the mrsr metadata of the run's last checkpoint (or its kept ``run.json``)."""
    if not (run / "last.safetensors").exists():
        return json.loads((run / "run.json").read_text(encoding="utf-8"))["initial_steps"]
    with safe_open(str(run / "last.safetensors"), "pt") as f:
        info = json.loads(f.metadata()["mrsr"]).get("info", {})
    return (info.get("init") or {}).get("steps") or 0


def parameters(run: Path) -> int:
    """Weights in the run's last checkpoint, read from the safetensors header (or its kept
    ``run.json``)."""
    if not (run / "last.safetensors").exists():
        return json.loads((run / "run.json").read_text(encoding="utf-8"))["parameters"]
    total = 0
    with safe_open(str(run / "last.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            total += math.prod(f.get_slice(key).get_shape())
    return total


def keep(run: Path, folder: Path) -> None:
    """The run's logs and ``run.json`` in ``folder / run.name``."""
    target = folder / run.name
    target.mkdir(parents=True, exist_ok=True)
    for log in ("val_log.csv", "train_log.csv"):
        shutil.copyfile(run / log, target / log)
    summary = {"initial_steps": initial_steps(run), "parameters": parameters(run)}
    (target / "run.json").write_text(json.dumps(summary) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="held-out PSNR gain over zero-filling")
    parser.add_argument("--keep", type=Path, help="copy the runs' logs into this folder")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(9.6, 4.4), dpi=120)
    table = {}
    for run in args.runs:
        steps, gains = read_curve(run)
        label = f"{run.name} ({parameters(run) / 1e3:.0f} k parameters)"
        style = "--" if initial_steps(run) else "-"  # a second stage, dashed
        ax.plot(steps, gains, style, marker="o", markersize=3, label=label)
        table[label] = dict(zip(steps, gains))
        if args.keep is not None and run.parent.resolve() != args.keep.resolve():
            keep(run, args.keep)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("training steps (batch 16)")
    ax.set_ylabel("PSNR gain (dB)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    steps = sorted({s for curve in table.values() for s in curve})
    print("| steps | " + " | ".join(table) + " |")
    print("|---|" + "---|" * len(table))
    for s in steps:
        cells = [f"{c[s]:+.2f}" if s in c else "-" for c in table.values()]
        print(f"| {s} | " + " | ".join(cells) + " |")
    print(json.dumps({"figure": str(args.out)}))


if __name__ == "__main__":
    main()
