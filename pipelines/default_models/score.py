"""Score a default model against its degradation's baselines on folders of reference volumes.

    python pipelines/default_models/score.py cssfn-kspace-x2 --folders data/default/heldout
    python pipelines/default_models/score.py runs/default/cssfn-kspace-x2-finetune \
        --folders data/default/heldout data/default/siteout --csv scores.csv

The model is a checkpoint file, a shipped model's name (``mrsr models``) or a training run's
folder (its ``last.safetensors``, as ``package.py`` takes it; ``--weights best`` for the one the
run's validation chose). Each volume of each folder is degraded by the model's own degradation
and scale, super-resolved by the degradation's baselines (strongest first) and by the model in
fp32, and scored in two protocols:

- ``slice``: the default models' cards (:func:`mrsr.metrics.slice_scores`, as
  :func:`mrsr.evaluation.model_vs_baselines`): PSNR/SSIM per slice, both volumes divided by the
  reference's 99.5th percentile, slices with more than 10 % foreground, averaged over slices;
- ``volume``: ``mrsr evaluate --baselines`` (:func:`mrsr.evaluation.iter_compare`): PSNR/SSIM
  over the whole volume's foreground, border of the scale shaved, data range of the reference.

Prints per folder a Markdown table, the mean PSNR gain over the strongest baseline in both
protocols, whether every volume is at or above it in PSNR and SSIM, and whether the target for
the scale (:data:`TARGETS`) is met. A ``sites.json`` beside the folders (volume file name to site
label) adds a site column.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mrsr.degradations import get
from mrsr.errors import MRSRError
from mrsr.evaluation import baselines, iter_compare
from mrsr.io import list_volumes, volume_stem
from mrsr.metrics import slice_scores
from mrsr.pipeline import Pipeline
from mrsr.zoo import weights_path

# mean PSNR gain (dB) over the strongest baseline a default model must reach on every split,
# with PSNR and SSIM at or above that baseline on every volume, per slice and as a whole volume
TARGETS = {2: 1.6, 3: 1.3, 4: 1.2}
PROTOCOLS = {"slice": "per slice (mean over slices)", "volume": "whole volume"}
CONSISTENT = "model + data consistency"


def checkpoint(what: str | Path, weights: str = "last") -> Path:
    """The checkpoint a file, a shipped model's name or a run folder (its ``<weights>``) stands
    for."""
    path = Path(what)
    if path.is_dir():
        found = path / f"{weights}.safetensors"
        if not found.is_file():
            raise MRSRError(f"{path}: a run folder without {found.name}")
        return found
    return weights_path(what)


def load(what: str | Path, weights: str = "last") -> Pipeline:
    """The model in fp32 on the CPU."""
    return Pipeline.from_pretrained(checkpoint(what, weights), precision="fp32", device="cpu")


def methods(pipe: Pipeline, consistency: bool = False) -> dict[str, Pipeline]:
    """The degradation's baselines (strongest first), then ``model`` (and with ``consistency``,
    where the degradation has it, the model with its measured k-space block put back)."""
    spec = pipe.spec
    interpolators = baselines(spec.scale, spec.degradation)
    found = {name: interpolators[name] for name in reversed(get(spec.degradation).baselines)}
    found["model"] = pipe
    if consistency and get(spec.degradation).data_consistency:
        consistent = copy.copy(pipe)
        consistent.settings = replace(pipe.settings, data_consistency=1.0)
        found[CONSISTENT] = consistent
    return found


def read_sites(path: Path) -> dict[str, str]:
    """``{volume file name: site}`` from a JSON object."""
    try:
        sites = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MRSRError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(sites, dict):
        raise MRSRError(f"{path}: expected an object of volume file name to site label")
    return {str(k): str(v) for k, v in sites.items()}


def _site(sites: dict[str, str], case_name: str, folder: Path) -> str:
    names = [p.name for p in list_volumes(folder) if volume_stem(p) == case_name]
    return next((sites[n] for n in [case_name, *names] if n in sites), "")


def score_folders(
    pipe: Pipeline,
    folders: Sequence[str | Path],
    consistency: bool = False,
    sites: dict[str, str] | None = None,
) -> list[dict]:
    """One row per folder, volume, method and protocol: ``{"folder", "volume", "site",
    "method", "protocol", "psnr", "ssim"}``. Each volume is degraded and super-resolved once;
    both protocols score the same outputs. ``sites``: ``{volume file name: site}`` (default: the
    ``sites.json`` beside each folder, if any)."""
    spec = pipe.spec
    rows = []
    for folder in map(Path, folders):
        labels = sites
        if labels is None:
            beside = folder.parent / "sites.json"
            labels = read_sites(beside) if beside.is_file() else {}
        cases = iter_compare(folder, spec.scale, methods(pipe, consistency), spec.degradation)
        for case in cases:
            common = {"folder": str(folder), "volume": case.name}
            common["site"] = _site(labels, case.name, folder) if labels else ""
            reference = case.reference.as_tensor()[0]
            for row in case.rows:
                per_slice = slice_scores(case.predictions[row["method"]].as_tensor()[0], reference)
                for protocol, values in (("slice", per_slice), ("volume", row)):
                    rows.append(
                        {
                            **common,
                            "method": row["method"],
                            "protocol": protocol,
                            "psnr": float(values["psnr"]),
                            "ssim": float(values["ssim"]),
                        }
                    )
    return rows


def _by_volume(rows: list[dict], folder: str, protocol: str) -> dict[str, dict[str, dict]]:
    """``{volume: {method: row}}`` of one folder and protocol, volumes in order of appearance."""
    found: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["folder"] == folder and r["protocol"] == protocol:
            found.setdefault(r["volume"], {})[r["method"]] = r
    return found


def folders_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["folder"] for r in rows))


def table(
    rows: list[dict],
    folder: str,
    protocols: Sequence[str] = tuple(PROTOCOLS),
    base: str = "zerofill",
    extra: dict[str, Callable[[str], str]] | None = None,
) -> list[str]:
    """Markdown lines: a row per volume (and protocol) with PSNR (dB) / SSIM per method and the
    model's PSNR gain over ``base``; ``extra``: more columns, ``{header: f(volume)}``."""
    sites = {r["volume"]: r["site"] for r in rows if r["folder"] == folder}
    extra = {**({"site": sites.__getitem__} if any(sites.values()) else {}), **(extra or {})}
    groups = {p: _by_volume(rows, folder, p) for p in protocols}
    names = list(next(iter(next(iter(groups.values())).values())))
    head = ["volume", *extra, *(["protocol"] if len(protocols) > 1 else []), *names, "gain (dB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for volume in groups[protocols[0]]:
        for protocol in protocols:
            scores = groups[protocol][volume]
            cells = [volume, *(f(volume) for f in extra.values())]
            cells += [protocol] if len(protocols) > 1 else []
            cells += [f"{scores[m]['psnr']:.2f} / {scores[m]['ssim']:.4f}" for m in names]
            cells.append(f"{scores['model']['psnr'] - scores[base]['psnr']:+.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict(rows: list[dict], folder: str, scale: int, base: str = "zerofill") -> dict:
    """Per protocol the mean PSNR gain of ``model`` over ``base`` and the volumes (with the
    metric) where it is below; ``met``: the target of :data:`TARGETS` in both protocols."""
    target = TARGETS.get(scale, max(TARGETS.values()))
    out: dict = {"target": target, "protocols": {}}
    for protocol in PROTOCOLS:
        group = _by_volume(rows, folder, protocol)
        gain = float(np.mean([v["model"]["psnr"] - v[base]["psnr"] for v in group.values()]))
        below = [
            f"{volume} {metric.upper()}"
            for volume, v in group.items()
            for metric in ("psnr", "ssim")
            if v["model"][metric] < v[base][metric]
        ]
        out["protocols"][protocol] = {"gain": gain, "below": below}
    out["met"] = all(p["gain"] >= target and not p["below"] for p in out["protocols"].values())
    out["volumes"] = len(_by_volume(rows, folder, "slice"))
    return out


def verdict_text(rows: list[dict], folder: str, scale: int, base: str = "zerofill") -> str:
    """One paragraph: gains, volumes below ``base``, and the target met or not."""
    v = verdict(rows, folder, scale, base)
    parts = []
    for protocol, p in v["protocols"].items():
        below = "no" if p["below"] else "yes"
        below += f" (below: {', '.join(p['below'])})" if p["below"] else ""
        parts.append(
            f"{PROTOCOLS[protocol]}: mean PSNR gain over {base} {p['gain']:+.2f} dB "
            f"({'at or above' if p['gain'] >= v['target'] else 'below'} the target); PSNR and "
            f"SSIM at or above {base} on every volume: {below}"
        )
    return (
        "; ".join(parts)
        + f". Target x{scale} (mean gain at least {v['target']:+.1f} dB and every volume at or "
        f"above {base} in PSNR and SSIM, in both protocols): {'met' if v['met'] else 'NOT met'}."
    )


def report(rows: list[dict], scale: int, base: str = "zerofill") -> str:
    """Markdown: per folder a table and its verdict."""
    lines = []
    for folder in folders_of(rows):
        n = len(_by_volume(rows, folder, "slice"))
        lines += [f"## {folder} ({n} volumes)", "", *table(rows, folder, base=base), ""]
        lines += [verdict_text(rows, folder, scale, base), ""]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .safetensors file, a shipped model's name or a run folder")
    parser.add_argument("--folders", nargs="+", type=Path, default=[Path("data/default/heldout")])
    parser.add_argument("--scale", type=int, help="check that the model is for this scale")
    parser.add_argument("--weights", choices=("last", "best"), default="last")
    parser.add_argument(
        "--consistency", action="store_true", help="add the model with data consistency"
    )
    parser.add_argument("--csv", type=Path, help="one row per folder, volume, method, protocol")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        pipe = load(args.model, args.weights)
        if args.scale is not None and args.scale != pipe.spec.scale:
            raise MRSRError(f"{args.model}: a x{pipe.spec.scale} model, not x{args.scale}")
        rows = score_folders(pipe, args.folders, args.consistency)
    except MRSRError as exc:
        sys.exit(f"score.py: {exc}")
    spec = pipe.spec
    base = get(spec.degradation).strongest_baseline
    print(f"# {args.model}: {spec.network} {spec.degradation} x{spec.scale}, fp32\n")
    print(report(rows, spec.scale, base))
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
