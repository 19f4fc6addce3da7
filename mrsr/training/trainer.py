"""The training loop: L1 (or L2) + Adam with step decay (the CSN/CSSFN protocol), validation on
whole volumes, atomic checkpoints, exact resume, and DistributedDataParallel under ``torchrun``.

Determinism: each step's batch is fixed by its indices into :class:`PatchPairs` (rank ``r`` of
``W`` takes samples ``((t * W) + r) * B + j`` at step ``t``), so a resumed run sees the same data
as an uninterrupted one, and the model, optimizer, scheduler, EMA and RNG state are restored.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from mrsr import degradations, networks
from mrsr.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
from mrsr.errors import MRSRError
from mrsr.files import check_regular, new_folder, open_log, remove_stale_temporaries, write_error
from mrsr.inference import super_resolve
from mrsr.io import load_volume
from mrsr.machine import resolve_device
from mrsr.memory import check_fits, human
from mrsr.metrics import score
from mrsr.networks.footprint import footprint
from mrsr.options import check_device
from mrsr.outputs import check_folder_name
from mrsr.progress import bar as progress_bar
from mrsr.training.data import (
    PatchPairs,
    collate_pairs,
    collate_slices,
    device_pairs,
    load_slabs,
    site_labels,
    volume_paths,
)
from mrsr.training.state import load_state, save_state
from mrsr.zoo import weights_path

__all__ = ["train"]

# What a run writes into output_dir besides its logs; a new run never replaces them.
LAST, BEST, STATE = RUN_FILES = ("last.safetensors", "best.safetensors", "state.safetensors")
LOGS = {
    "train_log.csv": ["step", "loss", "lr", "seconds"],
    "val_log.csv": ["step", "method", "psnr", "ssim", "nrmse"],
}
# Keys that may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = ("max_steps", "val_every", "log_every", "num_workers", "device", "degrade_on")


class StepIndices(torch.utils.data.Sampler):
    """Sample indices of steps ``start..stop-1`` for one rank (see the module docstring)."""

    def __init__(self, start: int, stop: int, batch: int, rank: int, world: int) -> None:
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            first = (step * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch


LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}  # L1 is the papers' loss


def _comparable(cfg: dict) -> dict:
    train = {k: v for k, v in cfg["train"].items() if k not in RESUMABLE_CHANGES}
    return {**cfg, "train": train}


class Validator:
    """PSNR/SSIM of whole validation volumes through the inference engine, with baselines."""

    def __init__(self, paths: list[Path], spec: ModelSpec, device: str = "cpu") -> None:
        self.spec, self.device = spec, device
        method = degradations.get(spec.degradation)
        self.pairs = [degradations.degrade(load_volume(p), spec.scale, method.name) for p in paths]
        self.baselines = {
            name: self._mean(ModelSpec.create(name, spec.scale, spec.degradation, {}).build())
            for name in method.baselines
        }

    def _mean(self, network: torch.nn.Module) -> dict[str, float]:
        scores = []
        for lr, hr in self.pairs:
            sr = super_resolve(
                lr, network, self.spec.scale, self.spec.grid, batch_size=8, device=self.device
            )
            scores.append(score(sr, hr, shave=self.spec.scale))
        return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}

    def __call__(self, network: torch.nn.Module) -> dict[str, float]:
        was_training = network.training
        result = self._mean(network)
        network.train(was_training)
        return result


class Logs:
    """CSV logs (and TensorBoard when installed) in the output folder; rank 0 only."""

    def __init__(self, out: Path, resume: bool) -> None:
        self.files = {}
        for name, header in LOGS.items():  # new files: a resumed run's hold the old rows
            self.files[out / name] = io.TextIOWrapper(
                open_log(out / name, resume), encoding="utf-8", newline=""
            )
            if not resume:
                self._row(out / name, header)
        self.train, self.val = self.files
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.board = None

    def _row(self, path: Path, row: list) -> None:
        try:
            csv.writer(self.files[path]).writerow(row)
            self.files[path].flush()
        except OSError as exc:
            raise write_error(path, exc) from exc

    def loss(self, step: int, loss: float, lr: float, seconds: float) -> None:
        self._row(self.train, [step, f"{loss:.6g}", f"{lr:.6g}", f"{seconds:.1f}"])
        if self.board:
            self.board.add_scalar("train/loss", loss, step)

    def metrics(self, step: int, method: str, values: dict[str, float]) -> None:
        row = [step, method] + [f"{values[k]:.6f}" for k in ("psnr", "ssim", "nrmse")]
        self._row(self.val, row)
        if self.board:
            for key, value in values.items():
                self.board.add_scalar(f"val_{method}/{key}", value, step)

    def close(self) -> None:
        for stream in self.files.values():
            stream.close()
        if self.board:
            self.board.close()


def _distributed(device: str) -> tuple[int, int, str]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.startswith("cuda"):
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def train(cfg: dict, resume: bool = False, progress: bool = True) -> Path:
    """Train as ``cfg`` says (see :mod:`mrsr.training.config`); returns the best checkpoint."""
    t = cfg["train"]
    device = check_device(resolve_device(t["device"]), "train.device")
    rank, world, device = _distributed(device)
    out = Path(cfg["output_dir"])
    _check_run_folder(out, resume)
    spec, model, dataset, train_paths = _build(cfg, device)
    init = _initialise(model, spec, t["init"]) if t["init"] else None  # before the EMA's copy
    optimiser = Optimiser(model, t)
    start, best, trained = _restore(out, cfg, optimiser) if resume else (0, float("-inf"), 0.0)
    recorder = None
    if rank == 0:  # the folder is made only now that the run is checked, and is not left empty
        info = {
            "trained": True,
            "data": {"train": [p.name for p in train_paths], "contrast": cfg["data"]["contrast"]},
        }
        if init is not None:
            info["init"] = init
        recorder = Recorder(cfg, spec, device, resume, best, info)
    net = DistributedDataParallel(model) if world > 1 else model
    loader = _loader(dataset, t, start, rank, world, device)
    bar = progress_bar(
        t["max_steps"], "training", "step", enabled=rank == 0 and progress, initial=start
    )
    model.train()
    with bar:  # the logs' seconds count the whole run, resumptions included
        _steps(net, loader, optimiser, recorder, bar, t, device, start, time.time() - trained)
    if world > 1:
        dist.barrier()
    if recorder is not None:
        recorder.logs.close()
    best_path = out / BEST
    return best_path if best_path.exists() else out / LAST


def _check_run_folder(out: Path, resume: bool) -> None:
    """Refuse an ``output_dir`` that holds no run to resume, or one that a new run would
    overwrite."""
    check_folder_name(out, "output_dir")
    found = [name for name in RUN_FILES if check_regular(out / name)]
    for name in LOGS:
        check_regular(out / name)
    if resume and STATE not in found:
        raise MRSRError(f"{out / STATE}: nothing to resume from (no training state)")
    if not resume and found:
        raise MRSRError(
            f"{out}: holds a training run already ({', '.join(found)}); pass --resume to "
            "continue it, or choose another output_dir"
        )


def _build(cfg: dict, device: str) -> tuple[ModelSpec, torch.nn.Module, PatchPairs, list[Path]]:
    """The network to train (seeded, and checked to fit in ``device``'s memory first), its
    patch pairs and the training volumes they come from."""
    t, deg = cfg["train"], cfg["degradation"]
    options = {k: v for k, v in cfg["model"].items() if k != "name"}
    torch.manual_seed(t["seed"])
    spec = ModelSpec.create(cfg["model"]["name"], deg["scale"], deg["method"], options)
    _check_memory(spec, t, device)
    # channels-last as in the inference engine, so validation does not change the kernels used
    model = spec.build().to(device, memory_format=torch.channels_last)
    train_paths = volume_paths(cfg["data"]["train"])
    sites = cfg["data"]["sites"]
    augment = cfg["augment"]
    dataset = PatchPairs(
        load_slabs(train_paths),
        deg["scale"],
        t["patch_size"],
        deg["method"],
        deg["noise"],
        t["seed"],
        context=options.get("in_channels", 1),
        upsample=_whole_slice_skip(model),
        hr_noise=augment["hr_noise"],
        gamma=augment["gamma"],
        lowpass=augment["lowpass"],
        on_device=degrade_on(t["degrade_on"], device) == "device",
        phase=augment["phase"],
        coils=augment["coils"],
        partial_fourier=augment["partial_fourier"],
        groups=None if sites is None else site_labels(train_paths, sites),
        patches=t["patches_per_slice"],
        lr_from=augment["lr_from"],
    )
    return spec, model, dataset, train_paths


class Optimiser:
    """Adam with step decay, gradient clipping and the EMA of the weights (``train.ema``):
    what each step changes, and so what a resumed run restores."""

    def __init__(self, model: torch.nn.Module, t: dict) -> None:
        self.model, self.grad_clip, self.decay = model, t["grad_clip"], t["ema"]
        self.adam = torch.optim.Adam(model.parameters(), lr=t["lr"], betas=(0.9, 0.999), eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.adam, t["lr_step"], gamma=t["lr_gamma"]
        )
        self.ema = [p.detach().clone() for p in model.parameters()] if t["ema"] else None

    def step(self, loss: torch.Tensor) -> None:
        self.adam.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.adam.step()
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema, self.model.parameters()):
                    e.lerp_(p.detach(), 1 - self.decay)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state(self) -> dict:
        """The weights, Adam's and the scheduler's state, the RNG and the EMA."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.adam.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "ema": self.ema,
        }

    def load(self, state: dict) -> None:
        """Restore what :meth:`state` returned."""
        self.model.load_state_dict(state["model"])
        self.adam.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.ema = state.get("ema") or self.ema


def _restore(out: Path, cfg: dict, optimiser: Optimiser) -> tuple[int, float, float]:
    """Load the state of the run in ``out`` into ``optimiser``; return the step it reached, its
    best validation PSNR and the seconds it trained (before this resumption)."""
    state = load_state(out / STATE)
    if _comparable(json.loads(state["config"])) != _comparable(cfg):
        raise MRSRError(f"{out / STATE}: the config differs from the run being resumed")
    optimiser.load(state)
    return state["step"], state["best"], float(state.get("seconds", 0.0))


class Recorder:
    """Rank 0's share of a run: the output folder, its logs, validation, the checkpoints and the
    state to resume from."""

    def __init__(
        self, cfg: dict, spec: ModelSpec, device: str, resume: bool, best: float, info: dict
    ) -> None:
        self.cfg, self.spec, self.best, self.info = cfg, spec, best, info
        self.out = Path(cfg["output_dir"])
        self.validator = (
            Validator(volume_paths(cfg["data"]["val"], "data.val"), spec, device)
            if cfg["data"]["val"]
            else None
        )
        with new_folder(self.out):
            for name in RUN_FILES:
                remove_stale_temporaries(self.out / name)  # left by a run killed while saving
            self.logs = Logs(self.out, resume)
        if self.validator and not resume:
            for name, values in self.validator.baselines.items():
                self.logs.metrics(0, name, values)

    def checkpoint(self, step: int, optimiser: Optimiser, began: float) -> None:
        """Validate the weights (the EMA if kept) and save them as the last checkpoint, and as
        the best when their PSNR is; then save the state to resume from."""
        model = optimiser.model
        weights = _swap(model, optimiser.ema)
        values = self.validator(model) if self.validator else None
        self.info.update(steps=step, val=values)
        save_checkpoint(self.out / LAST, model, _with_info(self.spec, self.info))
        if values is not None:
            self.logs.metrics(step, self.spec.network, values)
            if values["psnr"] > self.best:
                self.best = values["psnr"]
                save_checkpoint(self.out / BEST, model, _with_info(self.spec, self.info))
        _swap(model, weights)
        save_state(
            self.out / STATE,
            {
                "step": step,
                "best": self.best,
                "seconds": time.time() - began,
                **optimiser.state(),
                "config": json.dumps(self.cfg),
            },
        )


def _loader(
    dataset: PatchPairs, t: dict, start: int, rank: int, world: int, device: str
) -> torch.utils.data.DataLoader:
    """The batches of steps ``start + 1`` to ``train.max_steps`` for this rank."""
    items = t["batch_size"] // dataset.patches  # slices per step, each giving several patches
    joined = collate_pairs if dataset.patches > 1 else None  # else the default stacking
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=items,
        sampler=StepIndices(start, t["max_steps"], items, rank, world),
        num_workers=t["num_workers"],
        collate_fn=collate_slices if dataset.on_device else joined,
        pin_memory=dataset.on_device and torch.device(device).type == "cuda",
    )


def _steps(
    net: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    optimiser: Optimiser,
    recorder: Recorder | None,
    bar: Any,
    t: dict,
    device: str,
    start: int,
    began: float,
) -> None:
    """The step loop; rank 0 (the one with a ``recorder``) logs the mean loss every
    ``train.log_every`` steps and checkpoints every ``train.val_every``."""
    dataset = loader.dataset
    autocast = (
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        if t["precision"] == "bf16"
        else contextlib.nullcontext()
    )
    window = []
    for step, batch in enumerate(loader, start=start + 1):
        lr_batch, hr_batch, *skip = (
            device_pairs(dataset, batch, device) if dataset.on_device else batch
        )
        with autocast:
            pred = net(lr_batch.to(device), *(u.to(device) for u in skip))
            loss = LOSSES[t["loss"]](pred.float(), hr_batch.to(device))
        optimiser.step(loss)
        window.append(loss.item())
        mean = sum(window) / len(window)  # the running mean since the last logged step
        bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
        bar.update(1)
        if recorder is None:
            continue
        if step % t["log_every"] == 0 or step == t["max_steps"]:
            recorder.logs.loss(step, mean, optimiser.lr(), time.time() - began)
            window = []
        if step % t["val_every"] == 0 or step == t["max_steps"]:
            recorder.checkpoint(step, optimiser, began)


def _check_memory(spec: ModelSpec, t: dict, device: str) -> None:
    """Refuse, before anything is built, a run whose weights, Adam state and EMA, and one
    step's activations and gradients (traced on the ``meta`` device by
    :func:`~mrsr.networks.footprint.footprint`) do not fit in ``device``'s memory."""
    skeleton = spec.skeleton()
    k, p = int(getattr(skeleton, "in_channels", 1)), t["patch_size"]
    step = footprint(skeleton, (t["batch_size"], k, p, p), train=True)
    states = step.parameters * (3 + bool(t["ema"]))  # weights, Adam's two moments, the EMA
    size = [f"model.{o}" for o in ("channels", "n_blocks") if o in networks.options(spec.network)]
    check_fits(
        states + step.peak,
        f"training {spec.network} x{spec.scale} ({human(states)} of weights and optimizer "
        f"state, {human(step.peak)} for a step of {t['batch_size']} patches of {p}x{p})",
        device,
        f"lower {', '.join(size)}, train.batch_size or train.patch_size",
    )


def _initialise(model: torch.nn.Module, spec: ModelSpec, init: str) -> dict:
    """Load the weights of checkpoint ``init`` (``train.init``), which must hold the network
    this run trains: same network, options, scale and degradation. Returns what the
    checkpoints record of it: file name and steps trained (a resumed run then overwrites the
    weights with its own)."""
    path = weights_path(init)
    found, weights = load_checkpoint(path)

    def what(s: ModelSpec) -> str:
        return f"{s.network} x{s.scale} {s.degradation} with options {s.options}"

    def key(s: ModelSpec) -> tuple:
        return s.network, s.scale, s.degradation, s.options

    if key(found) != key(spec):
        raise MRSRError(
            f"train.init {path}: holds {what(found)}, but this run trains {what(spec)}; "
            "initialise from a checkpoint of the same network, or change the model section"
        )
    model.load_state_dict(weights.state_dict())
    return {"file": path.name, "steps": found.info.get("steps")}


def degrade_on(setting: str, device: torch.device) -> str:
    """Where pairs are degraded: ``train.degrade_on``, with ``auto`` meaning the training
    device on CUDA (CPU workers would starve it) and the loader elsewhere."""
    if setting != "auto":
        return setting
    return "device" if torch.device(device).type == "cuda" else "loader"


def _whole_slice_skip(model: torch.nn.Module):
    """The network's skip interpolation, for :class:`PatchPairs` to apply to whole slices."""
    esc = getattr(model, "esc", None)
    return esc.interpolate if esc is not None and esc.kind != "none" else None


def _swap(model: torch.nn.Module, weights: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
    """Load ``weights`` (e.g. the EMA) into ``model``; return the ones they replaced."""
    if weights is None:
        return None
    previous = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    return previous


def _with_info(spec: ModelSpec, info: dict) -> ModelSpec:
    return ModelSpec(**{**spec.__dict__, "info": dict(info)})
