"""The GPU check: what mrsr does on a CUDA machine, in under 5 minutes (run by hand).

    bash benchmarks/device_check.sh        # installs the package, then runs this file
    python benchmarks/device_check.py cpu  # a dry run of the same steps on the CPU

On a machine with CUDA it checks, and fails loudly on the first that does not hold:

1. ``--device auto`` resolves to CUDA and ``--precision auto`` to bf16 where the GPU supports it;
2. the engine's CUDA output in fp32 equals the CPU's to 1e-4 (relative to the output range),
   for the paper-size CSSFN-B2 x2 and the shipped x2 model; the bf16 cost in PSNR;
3. a 1-GPU NCCL DDP training (torchrun) of a few steps, then ``--resume`` to more steps;
4. an upscale of a 512 x 512 x 120 volume with the shipped model, with peak GPU memory;

then prints a Markdown timing table: s/slice of CSSFN-B2 x2 in fp32 and bf16 (64 x 64 LR
slices, batch 8), s/volume of the shipped x2 model, training steps/s of both networks. The
machine line (:func:`mrsr.machine.describe`) heads the output.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from monai.data import MetaTensor

from mrsr import Pipeline, metrics
from mrsr.inference import super_resolve
from mrsr.io import load_volume, sample_path, save_volume
from mrsr.machine import describe, resolve_device, resolve_precision
from mrsr.networks import create

DEVICE = sys.argv[1] if len(sys.argv) > 1 else "cuda"
CUDA = DEVICE.startswith("cuda")
PAPER: dict = {}  # the constructor's defaults are the paper's CSSFN-B2 x2 (16.4 M parameters)


def volume(shape: tuple[int, int, int], seed: int = 0) -> MetaTensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *shape, generator=g), 5, 1, 2) * 1000
    return MetaTensor(x[0], affine=torch.eye(4, dtype=torch.float64))


def synchronize() -> None:
    if CUDA:
        torch.cuda.synchronize()


def seconds(fn, repeat: int = 3) -> float:
    fn()  # warm-up: cuDNN autotuning, lazy allocations
    synchronize()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def check(condition: bool, what: str) -> None:
    print(("ok    " if condition else "FAIL  ") + what, flush=True)
    if not condition:
        sys.exit(1)


def train_steps_per_second(model: dict, steps: int) -> float:
    net = create("cssfn", scale=2, **model).to(DEVICE)
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x, y = torch.rand(16, 1, 24, 24, device=DEVICE), torch.rand(16, 1, 48, 48, device=DEVICE)

    def step() -> None:
        loss = torch.nn.functional.l1_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return steps / seconds(lambda: [step() for _ in range(steps)], repeat=1)


def ddp_training(folder: Path) -> None:
    config = {
        "data": {"train": str(sample_path()), "val": str(sample_path())},
        "degradation": {"method": "kspace", "scale": 2},
        "model": {"name": "cssfn", "channels": 16, "n_blocks": 1, "n_units": 2},
        "train": {
            "max_steps": 20,
            "batch_size": 8,
            "patch_size": 24,
            "val_every": 10,
            "device": DEVICE,
        },
        "output_dir": str(folder / "run"),
    }
    path = folder / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    for extra in ([], ["--resume", "--set", "train.max_steps=40"]):
        done = subprocess.run([*run, "-m", "mrsr", "train", str(path), *extra], text=True)
        what = " ".join(extra) or "20 steps"
        check(done.returncode == 0, f"1-process DDP training on {DEVICE}: {what}")
    check((folder / "run" / "last.safetensors").exists(), "training wrote its checkpoint")


def main() -> None:
    print(f"machine: {describe()}\n")
    if CUDA:
        check(torch.cuda.is_available(), "CUDA is available")
        device = resolve_device("auto")
        check(device.startswith("cuda"), f"--device auto chooses {device}")
    native = torch.cuda.is_bf16_supported() if CUDA else resolve_precision("auto", "cpu") == "bf16"
    precision = resolve_precision("auto", DEVICE)
    check(precision == ("bf16" if native else "fp32"), f"--precision auto chooses {precision}")

    lr = volume((64, 64, 8))
    rows = []
    for name, net in (
        ("CSSFN-B2 x2 (paper)", create("cssfn", scale=2, **PAPER).eval()),
        ("cssfn-kspace-x2 (shipped)", Pipeline.from_pretrained("cssfn-kspace-x2").network),
    ):
        cpu = super_resolve(lr, net, 2, device="cpu", precision="fp32")
        gpu = super_resolve(lr, net, 2, device=DEVICE, precision="fp32")
        spread = float(cpu.max() - cpu.min())
        error = float((cpu - gpu).abs().max()) / spread
        check(error < 1e-4, f"{name}: {DEVICE} fp32 equals CPU to {error:.1e} of the range")
        bf16 = super_resolve(lr, net, 2, device=DEVICE, precision="bf16")
        print(f"      {name}: bf16 against fp32, PSNR {metrics.psnr(bf16[0], cpu[0]):.1f} dB")
        times = [
            seconds(lambda p=p, net=net: super_resolve(lr, net, 2, device=DEVICE, precision=p))
            / lr.shape[-1]
            for p in ("fp32", "bf16")
        ]
        rows.append([f"{name}, s/slice (64x64 -> 128x128)", *(f"{t:.4f}" for t in times)])

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ddp_training(folder)
        big = folder / "big.nii.gz"
        save_volume(volume((512, 512, 120)), big)
        pipe = Pipeline.from_pretrained("cssfn-kspace-x2", device=DEVICE)
        if CUDA:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = pipe.save(big, folder / "big_sr.nii.gz")
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan")
        check(load_volume(out).shape[1:] == (1024, 1024, 120), "512x512x120 upscaled to x2")
        print(f"      512x512x120 -> x2 in {elapsed:.1f} s, peak GPU memory {peak:.2f} GiB")
        label = "cssfn-kspace-x2, 512x512x120 volume, s (load + SR + save)"
        rows.append([label, f"{elapsed:.1f}", "-"])
        shipped = Pipeline.from_pretrained("cssfn-kspace-x2").spec.options
        for name, options in (("CSSFN-B2 x2 (paper)", PAPER), ("default CSSFN x2", shipped)):
            rate = train_steps_per_second(options, 20 if CUDA else 2)
            rows.append([f"{name}, training steps/s (batch 16, 24x24)", f"{rate:.1f}", "-"])

    print(f"\n| on {DEVICE} | fp32 | bf16 |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
