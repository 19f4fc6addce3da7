"""What the BIDS layer costs: ``mrsr bids`` against ``mrsr upscale`` on a folder (run by hand).

    python benchmarks/bids_overhead.py [--subjects 8] [--runs 5] [--model zerofill] [--large 500]

The bundled sample (180 x 216 x 24) is written once per subject as ``sub-NN/anat/sub-NN_T1w``
with a JSON sidecar into a BIDS dataset, and once more as ``sub-NN_T1w.nii.gz`` into a plain
folder. Then, in turn (A B A B ...: a drift of the machine's speed hits both alike), each run
into a new output folder:

- A: ``mrsr bids RAW OUT participant --model M --scale 2 --device cpu -q``
- B: ``mrsr upscale FOLDER OUT --model M --scale 2 --device cpu -q``

Prints the median wall seconds of each whole process (start-up included), the median of the
paired differences A - B (the BIDS layer's cost: pybids' import and index, the sidecars and
dataset_description) and its share of B; then the layer alone, timed in this process (less
noisy than the difference of two whole runs): pybids' import, pybids' import and the selection
in a new process that has imported what a run imports first, and selecting the images (index,
query, metadata) of the benchmark's dataset and of a dataset of ``--large`` participants.
``zerofill`` makes the super-resolution itself nearly free, so that the difference is the worst
case's share; a shipped network makes it smaller.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mrsr.derivatives import find_sources
from mrsr.io import sample_path
from mrsr.machine import describe


def build(root: Path, subjects: int) -> tuple[Path, Path]:
    """A BIDS dataset and a plain folder holding the same ``subjects`` volumes."""
    raw, folder = root / "raw", root / "folder"
    folder.mkdir(parents=True)
    raw.mkdir()
    description = {"Name": "benchmark", "BIDSVersion": "1.9.0"}
    (raw / "dataset_description.json").write_text(json.dumps(description))
    for k in range(1, subjects + 1):
        anat = raw / f"sub-{k:02d}" / "anat"
        anat.mkdir(parents=True)
        shutil.copyfile(sample_path(), anat / f"sub-{k:02d}_T1w.nii.gz")
        (anat / f"sub-{k:02d}_T1w.json").write_text(json.dumps({"RepetitionTime": 2.0}))
        shutil.copyfile(sample_path(), folder / f"sub-{k:02d}_T1w.nii.gz")
    return raw, folder


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def index_times(tmp: Path, raw: Path, large: int) -> dict[str, float]:
    """The BIDS layer alone: pybids' import in this process; the median of 5 new processes'
    import and selection (:func:`mrsr.derivatives.find_sources`: index, query, metadata) of
    the benchmark's dataset; then the median of 5 selections in this process of that dataset
    and of a dataset of ``large`` participants (hard links to one volume), all or one."""
    start = time.perf_counter()
    import bids.layout  # noqa: F401 - what its import costs

    times = {"import bids.layout (first time)": time.perf_counter() - start}
    big = tmp / "large"
    (big / "sub-0001" / "anat").mkdir(parents=True)
    shutil.copyfile(raw / "dataset_description.json", big / "dataset_description.json")
    for k in range(1, large + 1):
        anat = big / f"sub-{k:04d}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        os.link(sample_path(), anat / f"sub-{k:04d}_T1w.nii.gz")
        (anat / f"sub-{k:04d}_T1w.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    cases = {
        f"select the {len(list(raw.glob('sub-*')))} images of the benchmark": (raw, None),
        f"select all {large} participants of a larger dataset": (big, None),
        f"select one participant of those {large}": (big, ["0001"]),
    }
    cold = (  # a new process, with what a run has imported before the selection
        "import time, torch, monai.data, mrsr.cli.upscale; start = time.perf_counter(); "
        "from mrsr.derivatives import find_sources; find_sources(__import__('sys').argv[1]); "
        "print(time.perf_counter() - start)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", cold, str(raw)], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(5)
    ]
    times["import pybids and select the benchmark's images, in a new process"] = statistics.median(
        runs
    )
    for what, (root, labels) in cases.items():
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            find_sources(root, labels)
            runs.append(time.perf_counter() - start)
        times[what] = statistics.median(runs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="zerofill")
    parser.add_argument("--large", type=int, default=500, help="participants of the larger set")
    args = parser.parse_args()
    options = ["--model", args.model, "--scale", "2", "--device", "cpu", "-q"]
    mrsr = [sys.executable, "-m", "mrsr"]
    with tempfile.TemporaryDirectory() as tmp:
        raw, folder = build(Path(tmp), args.subjects)
        bids, plain = [], []
        for run in range(args.runs + 1):  # the first pair warms the file cache, not counted
            out_a, out_b = Path(tmp) / f"bids{run}", Path(tmp) / f"plain{run}"
            a = timed([*mrsr, "bids", str(raw), str(out_a), "participant", *options])
            b = timed([*mrsr, "upscale", str(folder), str(out_b), *options])
            if run:
                bids.append(a)
                plain.append(b)
        layer = index_times(Path(tmp), raw, args.large)
    differences = [a - b for a, b in zip(bids, plain)]
    extra = statistics.median(differences)
    print(describe())
    print(f"{args.subjects} volumes of 180 x 216 x 24, --model {args.model} --scale 2")
    print(f"{args.runs} runs each, A B A B ...")
    print(f"mrsr bids ... participant  median {statistics.median(bids):.2f} s (whole process)")
    print(f"mrsr upscale folder/ out/  median {statistics.median(plain):.2f} s")
    print(
        f"BIDS layer: median paired difference {extra:+.2f} s "
        f"({extra / statistics.median(plain):+.0%} of upscale; min {min(differences):+.2f}, "
        f"max {max(differences):+.2f})"
    )
    for what, seconds in layer.items():
        print(f"{what}: {seconds:.3f} s")


if __name__ == "__main__":
    main()
