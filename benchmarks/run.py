"""Speed, memory and quality of mrsr, printed as Markdown tables (run by hand, not a test).

    python benchmarks/run.py [--quick] [--heldout data/default/heldout]

1. engine vs a plain eager loop over single slices (NCHW, ``torch.no_grad``), paper-size
   CSSFN-B2 x2, fp32 and bf16: time per slice, speed-up, largest relative difference;
2. pipeline overhead (load, normalise, slice, reassemble, save) against network time on a
   240 x 240 x 96 volume with the small CSSFN (133 k parameters);
3. peak memory beyond the input and output arrays for 50 and 400 slices;
4. training throughput (steps/s, batch 16, 24 x 24 patches) of the paper-size and default nets;
5. quality of every shipped model against zero-filling and grid-correct bicubic on held-out
   volumes (slices normalised by the reference's 99.5th percentile, slices with > 10 %
   foreground, PSNR/SSIM per slice averaged);
6. the PSNR cost and speed-up of ``precision="auto"`` (bf16 where native) against fp32 for
   every shipped model on the same volumes;
7. a cohort folder run (20 volumes of 192 x 192 x 48) with and without I/O overlap, against
   the network time alone;
8. peak memory of ``mrsr upscale`` on 512 x 512 x 120 and x 300 volumes against their arrays;
9. training pairs/s: one CPU loader worker degrading per pair (``train.degrade_on: loader``),
   the same worker only augmenting, and the batched degradation on each device
   (``degrade_on: device``), next to the pairs/s that the paper-size CSSFN-B2 consumes there;
10. the whole ``mrsr upscale`` command on a 256 x 256 x 30 scan with every shipped model.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.data import MetaTensor
from torch.utils.flop_counter import FlopCounterMode

from mrsr import metrics
from mrsr.inference import super_resolve
from mrsr.intensity import intensity_window
from mrsr.io import load_volume, save_volume
from mrsr.machine import describe, resolve_precision
from mrsr.networks import create
from mrsr.pipeline import Pipeline
from mrsr.transforms import degrade
from mrsr.zoo import shipped_weights

SMALL_NET = {"channels": 32, "n_blocks": 2, "n_units": 3, "q": 2, "skip": "kspace"}


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def smooth_volume(shape: tuple[int, int, int], seed: int = 0) -> MetaTensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, *shape, generator=g)
    x = torch.nn.functional.avg_pool3d(x, 5, 1, 2) * 1000
    return MetaTensor(x[0], affine=torch.eye(4, dtype=torch.float64))


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def eager_loop(net: torch.nn.Module, vol: MetaTensor) -> torch.Tensor:
    lo, hi = intensity_window(vol.as_tensor()[0])
    with torch.no_grad():
        slices = [
            net((vol.as_tensor()[:, None, :, :, z] - lo) / (hi - lo))[0, 0]
            for z in range(vol.shape[-1])
        ]
    return torch.stack(slices, -1) * (hi - lo) + lo


def engine_vs_eager(size: int, n: int) -> str:
    torch.manual_seed(0)
    net = create("cssfn", scale=2).eval()
    vol = smooth_volume((size, size, n))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, size, size))
    gflop = counter.get_total_flops() / 1e9  # per slice
    t_eager, ref = timed(lambda: eager_loop(net, vol))
    rows = [
        [
            "eager loop, NCHW, one slice at a time",
            f"{t_eager / n:.2f}",
            f"{gflop * n / t_eager:.0f}",
            "1.00",
            "-",
        ]
    ]
    for precision in ("fp32", "bf16"):
        for batch in (1, 4):
            t, out = timed(
                lambda b=batch, p=precision: super_resolve(
                    vol, net, 2, batch_size=b, precision=p
                ).as_tensor()[0]
            )
            diff = float((out - ref).abs().max() / ref.abs().max())
            name = f"engine, {precision}, batch {batch}"
            rows.append(
                [name, f"{t / n:.2f}", f"{gflop * n / t:.0f}", f"{t_eager / t:.2f}", f"{diff:.1e}"]
            )
    return table(
        [
            f"CSSFN-B2 x2 (16.4 M), LR slices {size}x{size}, {n} slices",
            "s/slice",
            "GFLOP/s",
            "speed-up",
            "max rel. diff.",
        ],
        rows,
    )


def overhead() -> str:
    net = create("cssfn", scale=2, **SMALL_NET).eval()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lr.nii.gz"
        save_volume(smooth_volume((120, 120, 96)), src)
        pipe = Pipeline(net, 2, precision="fp32")
        t_total, _ = timed(lambda: pipe.save(src, Path(tmp) / "sr.nii.gz", overwrite=True))
        vol = load_volume(src)
        t_net, _ = timed(lambda: super_resolve(vol, net, 2, batch_size=8))
        with torch.no_grad():
            x = (
                vol.as_tensor()[0]
                .permute(2, 0, 1)[:, None]
                .contiguous(memory_format=torch.channels_last)
            )
            t_pure, _ = timed(lambda: [net(x[i : i + 8]) for i in range(0, 96, 8)])
    rows = [
        ["network alone (batches of 8 slices)", f"{t_pure:.2f}", "-"],
        [
            "engine (normalise, slice, reassemble)",
            f"{t_net:.2f}",
            f"{(t_net - t_pure) / t_pure:.1%}",
        ],
        [
            "whole command (load, engine, save NIfTI)",
            f"{t_total:.2f}",
            f"{(t_total - t_pure) / t_pure:.1%}",
        ],
    ]
    return table(["120x120x96 -> 240x240x96, small CSSFN", "s", "overhead"], rows)


def cohort(n: int) -> str:
    """Folder mode on ``n`` volumes of 192 x 192 x 48 with the shipped x2 model (fp32): wall
    time of ``save_each`` without and with read-ahead/write-behind, against the network alone
    on the same volumes already in memory."""
    pipe = Pipeline.from_pretrained("cssfn-kspace-x2", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        inputs = [root / "in" / f"v{k:02d}.nii.gz" for k in range(n)]
        for k, path in enumerate(inputs):
            save_volume(smooth_volume((192, 192, 48), seed=k), path)
        volumes = [load_volume(p) for p in inputs]
        t_net, _ = timed(lambda: [pipe(v) for v in volumes])
        volumes.clear()
        rows = [["network alone (volumes in memory)", f"{t_net:.1f}", "1.00"]]
        for overlap in (False, True):
            out = root / f"out_{overlap}"
            out.mkdir()
            jobs = [(p, out / p.name) for p in inputs]
            t, outcomes = timed(lambda jobs=jobs, o=overlap: list(pipe.save_each(jobs, overlap=o)))
            assert all(isinstance(path, Path) for _, path in outcomes)
            label = "folder run, read-ahead + write-behind" if overlap else "folder run, sequential"
            rows.append([label, f"{t:.1f}", f"{t / t_net:.2f}"])
    return table([f"{n} volumes 192x192x48 -> x2, cssfn-kspace-x2", "s", "x network"], rows)


def upscale_command(shape: tuple[int, int, int] = (256, 256, 30)) -> str:
    """Wall time of the whole ``mrsr upscale`` command (a fresh process: imports, load, network,
    gzipped NIfTI written) on a ``shape`` scan, for every shipped model and precision."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "scan.nii.gz", Path(tmp) / "sr.nii.gz"
        save_volume(smooth_volume(shape), src)
        for name in sorted(shipped_weights()):
            for precision in ("fp32", "auto"):
                argv = ["upscale", str(src), str(out), "--model", name, "--precision", precision]
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "mrsr", *argv, "-q", "--overwrite"], check=True
                )
                label = (
                    precision
                    if precision == "fp32"
                    else f"auto ({resolve_precision('auto', 'cpu')})"
                )
                rows.append([name, label, f"{time.perf_counter() - start:.1f}"])
    size = "x".join(map(str, shape))
    return table([f"mrsr upscale of a {size} scan: model", "precision", "s"], rows)


_PEAK = """
import sys
from mrsr.cli import main
from mrsr import Pipeline
Pipeline("zerofill", 2)
code = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
print(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
"""


def _vm_hwm(*argv: str) -> float:
    """Peak resident memory (MiB, VmHWM) of a fresh process that imports mrsr, then runs the
    command line with ``argv`` (nothing without)."""
    done = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024


def large_volumes(depths: tuple[int, ...]) -> str:
    """Peak memory of ``mrsr upscale`` x2 on 512 x 512 x Z float32 volumes, beyond what
    importing mrsr takes, against the input plus output arrays."""
    base = _vm_hwm()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in depths:
            src = Path(tmp) / f"v{depth}.nii.gz"
            save_volume(smooth_volume((512, 512, depth)), src)
            arrays = 512 * 512 * depth * 4 * (1 + 4) / 2**20
            for model in ("zerofill", "cssfn-kspace-x2"):
                argv = ["upscale", str(src), str(Path(tmp) / "o.nii.gz"), "--model", model]
                peak = _vm_hwm(*argv, "-q", "--overwrite") - base
                rows.append(
                    [
                        f"512x512x{depth}",
                        model,
                        f"{arrays:.0f}",
                        f"{peak:.0f}",
                        f"{peak / arrays:.2f}",
                    ]
                )
    header = ["volume -> x2", "model", "in + out (MiB)", "peak beyond imports (MiB)", "ratio"]
    return f"imports alone: {base:.0f} MiB\n\n" + table(header, rows)


def peak_memory(slices: int) -> float:
    """Peak RSS (MiB) of a fresh process upscaling 64x64xN, minus its input and output arrays."""
    code = f"""
import resource, torch
from monai.data import MetaTensor
from mrsr.inference import super_resolve
from mrsr.networks import create
net = create("cssfn", scale=2, channels=32, n_blocks=2, n_units=3, q=2, skip="kspace")
torch.manual_seed(0)
vol = MetaTensor(torch.rand(1, 64, 64, {slices}), affine=torch.eye(4, dtype=torch.float64))
out = super_resolve(vol, net, 2, batch_size=8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    peak = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    arrays = 64 * 64 * slices * 4 * (1 + 4) / 2**20
    return peak - arrays


def memory() -> str:
    rows = []
    for n in (50, 400):
        rows.append([n, f"{peak_memory(n):.0f}"])
    ratio = float(rows[1][1]) / float(rows[0][1])
    rows.append(["ratio 400 / 50", f"{ratio:.2f}"])
    return table(["slices (64x64 -> 128x128)", "peak RSS minus input+output (MiB)"], rows)


def training_speed(steps: int) -> str:
    rows = []
    for name, options in (("paper CSSFN-B2 x2", {}), ("small CSSFN x2", SMALL_NET)):
        net = create("cssfn", scale=2, **options)
        opt = torch.optim.Adam(net.parameters(), 1e-4)
        x, y = torch.rand(16, 1, 24, 24), torch.rand(16, 1, 48, 48)

        def step(net=net, opt=opt, x=x, y=y):
            loss = torch.nn.functional.l1_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        t, _ = timed(lambda s=step: [s() for _ in range(steps)])
        params = sum(p.numel() for p in net.parameters())
        rows.append([name, f"{params:,}", f"{steps / t:.2f}"])
    return table(["network", "parameters", "steps/s (batch 16, 24x24 LR patches)"], rows)


def _pairs_per_second(fn, count: int) -> float:
    fn()
    seconds, _ = timed(fn)
    return count / seconds


def loader_speed(train: Path, batches: int) -> str:
    """Pairs/s of each half of the training data path (k-space x2, the default models'
    augmentation, batch 16 of 24 x 24 patches), on the default training volumes if present."""
    from mrsr.training.data import (
        PatchPairs,
        collate_slices,
        device_pairs,
        load_slabs,
        volume_paths,
    )
    from mrsr.training.trainer import _whole_slice_skip

    if train.is_dir():
        slabs, source = load_slabs(volume_paths([str(train)])), f"the volumes in {train}"
    else:
        slabs = [
            smooth_volume((256, 256, 24), seed=k).as_tensor()[0].movedim(-1, 0) for k in (0, 1)
        ]
        slabs, source = [s / s.max() for s in slabs], "two smooth 256 x 256 x 24 volumes"
    skip = _whole_slice_skip(create("cssfn", scale=2, **SMALL_NET))
    options = dict(hr_noise=0.02, gamma=0.3, lowpass=0.3, upsample=skip)
    per_pair = PatchPairs(slabs, 2, 24, **options)
    halves = PatchPairs(slabs, 2, 24, on_device=True, **options)
    n = 16 * batches
    rows = [
        [
            "loader worker, degrade_on: loader",
            "cpu",
            f"{_pairs_per_second(lambda: [per_pair[i] for i in range(n)], n):.0f}",
        ],
        [
            "loader worker, degrade_on: device (augment only)",
            "cpu",
            f"{_pairs_per_second(lambda: [halves[i] for i in range(n)], n):.0f}",
        ],
    ]
    items = [collate_slices([halves[16 * b + j] for j in range(16)]) for b in range(batches)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:

        def batched(device=device):
            for batch in items:
                device_pairs(halves, batch, torch.device(device))
            if device == "cuda":
                torch.cuda.synchronize()

        rows.append(["device, batched degradation", device, f"{_pairs_per_second(batched, n):.0f}"])
        net = create("cssfn", scale=2).to(device)
        opt = torch.optim.Adam(net.parameters(), 1e-4)
        x, y = torch.rand(16, 1, 24, 24, device=device), torch.rand(16, 1, 48, 48, device=device)

        def step(net=net, opt=opt, x=x, y=y, device=device):
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                loss = torch.nn.functional.l1_loss(net(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()

        rate = _pairs_per_second(lambda s=step: [s() for _ in range(batches)], n)
        rows.append(["paper CSSFN-B2 x2 training consumes (bf16)", device, f"{rate:.0f}"])
    header = ["stage (one thread per CPU process)", "device", "pairs/s"]
    return f"on {source}\n\n" + table(header, rows)


def quality(heldout: Path) -> str:
    def cell(pred: MetaTensor, ref: torch.Tensor) -> str:
        scores = metrics.slice_scores(pred.as_tensor()[0], ref)
        return f"{scores['psnr']:.2f} / {scores['ssim']:.4f}"

    rows = []
    for name, path in sorted(shipped_weights().items()):
        pipe = Pipeline.from_pretrained(path, precision="fp32")
        spec = pipe.spec
        baselines = ["zerofill", "bicubic"] if spec.degradation == "kspace" else [None, "bicubic"]
        for volume in sorted(heldout.glob("*.nii.gz")):
            lr, hr = degrade(load_volume(volume), spec.scale, spec.degradation)
            ref = hr.as_tensor()[0]
            row = [name, volume.name.replace(".nii.gz", "")]
            for base in baselines:
                baseline = base and Pipeline(base, spec.scale, degradation=spec.degradation)
                row.append(cell(baseline(lr), ref) if baseline else "-")
            rows.append([*row, cell(pipe(lr), ref)])
    header = ["model", "held-out volume", "zero-fill", "bicubic (model's grid)", "model"]
    return "PSNR (dB) / SSIM\n\n" + table(header, rows)


def precision_cost(heldout: Path) -> str:
    """PSNR and time of every shipped model with ``precision="auto"`` against fp32 on the
    held-out volumes (``auto`` is bf16 where this machine computes it natively)."""
    auto = resolve_precision("auto", "cpu")
    rows = []
    for name in sorted(shipped_weights()):
        spec = Pipeline.from_pretrained(name).spec
        for volume in sorted(heldout.glob("*.nii.gz")):
            lr, hr = degrade(load_volume(volume), spec.scale, spec.degradation)
            ref = hr.as_tensor()[0]
            cells = []
            for precision in ("fp32", "auto"):
                pipe = Pipeline.from_pretrained(name, precision=precision)
                seconds, out = timed(lambda pipe=pipe, lr=lr: pipe(lr))
                cells.append((metrics.slice_scores(out.as_tensor()[0], ref)["psnr"], seconds))
            (fp32, t32), (chosen, tauto) = cells
            label = volume.name.replace(".nii.gz", "")
            cost = f"{chosen - fp32:+.3f}"
            rows.append([name, label, f"{fp32:.3f}", f"{chosen:.3f}", cost, f"{t32 / tauto:.2f}"])
    header = ["model", "held-out volume", "fp32 PSNR", f"auto ({auto}) PSNR", "cost", "speed-up"]
    return table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer slices and steps")
    parser.add_argument("--heldout", type=Path, default=Path("data/default/heldout"))
    parser.add_argument("--train", type=Path, default=Path("data/default/train"))
    parser.add_argument(
        "--only",
        nargs="+",
        help="sections: engine overhead memory train quality precision cohort large loader upscale",
    )
    args = parser.parse_args()
    sections = {
        "engine": lambda: engine_vs_eager(48 if args.quick else 64, 4 if args.quick else 8),
        "overhead": overhead,
        "memory": memory,
        "train": lambda: training_speed(3 if args.quick else 10),
        "quality": lambda: quality(args.heldout),
        "precision": lambda: precision_cost(args.heldout),
        "cohort": lambda: cohort(6 if args.quick else 20),
        "large": lambda: large_volumes((120,) if args.quick else (120, 300)),
        "upscale": upscale_command,
        "loader": lambda: loader_speed(args.train, 2 if args.quick else 10),
    }
    print(f"machine: {describe()}")
    for key in args.only or sections:
        print(f"\n### {key}\n")
        print(sections[key]())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n(peak RSS of this process: {peak:.0f} MiB)")


if __name__ == "__main__":
    main()
