"""``mrsr.Pipeline``: one object from a low-resolution volume to a super-resolved NIfTI.

>>> from mrsr import Pipeline
>>> from mrsr.io import sample_path
>>> pipe = Pipeline("zerofill", scale=2)          # a baseline; or Pipeline.from_pretrained(path)
>>> pipe(sample_path()).shape
torch.Size([1, 360, 432, 24])
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from mrsr import networks
from mrsr.checkpoint import ModelSpec, load_checkpoint, shipped_weights, weights_path
from mrsr.errors import MRSRError, one_line, shown
from mrsr.geometry import slice_axis, spacing
from mrsr.inference import peak_bytes, super_resolve
from mrsr.intensity import clamp_volume, range_facts
from mrsr.io import as_volume, inspect_volume, read_bytes, save_volume
from mrsr.labels import refuse_label_map
from mrsr.machine import resolve_device, resolve_precision
from mrsr.memory import check_fits
from mrsr.metrics import score
from mrsr.options import OPTIONS, check_network_options, check_options
from mrsr.outputs import check_space, claim, plan_outputs
from mrsr.progress import note
from mrsr.provenance import add_facts, record
from mrsr.resample import resample, resample_bytes
from mrsr.target import GridPlan, check_scale, plan_grid, target_grid

__all__ = ["Pipeline", "as_volume", "load_model", "score", "shipped_weights"]

MASKS = ("auto", "none")  # the masks evaluate names: Otsu foreground of the reference, or none


class Pipeline:
    """Super-resolve MR volumes with a 2D network applied slice by slice.

    Args:
        network: a name of :func:`mrsr.networks.available` (built untrained, or a parameter-free
            baseline such as ``"zerofill"``), or an ``nn.Module``.
        scale: in-plane upscaling factor (default 2). Given explicitly, it must suit a target
            grid (``voxel_size``, ``like``): a grid that needs no network or another scale is
            refused (:func:`mrsr.target.check_scale`) rather than the scale silently unused.
        degradation: the acquisition model the network is for (``"kspace"`` or ``"bicubic"``);
            it fixes the sampling grid, hence the output affine.
        batch_size, device, axis, tta, precision, data_consistency, nonnegative, progress: see
            :func:`mrsr.inference.super_resolve` (``data_consistency=True`` means weight 1);
            ``device="auto"`` and ``precision="auto"`` (the defaults) pick CUDA, else MPS, else
            CPU, and bf16 where that device computes it natively, else fp32
            (:mod:`mrsr.machine`); the chosen values are ``self.device``, ``self.precision``.
        through_plane_budget, slice_thickness, slice_profile: for a target grid finer along
            thick slices (:meth:`plan`): seconds of through-plane training
            (:func:`mrsr.throughplane.super_resolve_through_plane`; 0: cubic B-spline
            interpolation instead), the slices' thickness in mm (default: their spacing) and
            profile (``"box"`` or ``"gaussian"``).
        **options: constructor options of the named network.

    Every argument is checked against the declared options (:mod:`mrsr.options`) and every
    volume through :func:`mrsr.io.as_volume`: a bad value raises :class:`~mrsr.errors.MRSRError`
    (a ``ValueError``) naming it. Label maps are refused (:mod:`mrsr.labels`).
    """

    def __init__(
        self,
        network: str | torch.nn.Module = "cssfn",
        scale: int | None = None,
        *,
        degradation: str = "kspace",
        batch_size: int = 8,
        device: str = "auto",
        axis: int | None = None,
        tta: bool = False,
        precision: str = "auto",
        data_consistency: float = 0.0,
        nonnegative: bool | None = None,
        progress: bool = False,
        through_plane_budget: float = 120.0,
        slice_thickness: float | None = None,
        slice_profile: str = "box",
        **options: Any,
    ) -> None:
        if isinstance(data_consistency, bool):  # True: weight 1
            data_consistency = float(data_consistency)
        check_options(
            {
                "network": network,
                "scale": 2 if scale is None else scale,
                "degradation": degradation,
                "batch_size": batch_size,
                "device": device,
                "axis": axis,
                "tta": tta,
                "precision": precision,
                "data_consistency": data_consistency,
                "nonnegative": nonnegative,
                "progress": progress,
                "through_plane_budget": through_plane_budget,
                "slice_thickness": slice_thickness,
                "slice_profile": slice_profile,
            },
            OPTIONS,
            "",
        )
        self.scale_given = scale is not None  # asked for: a target grid must need this scale
        scale = 2 if scale is None else int(scale)
        if isinstance(network, torch.nn.Module):
            if options:
                raise MRSRError(
                    f"{', '.join(sorted(options))}: network options build a network by name, "
                    "but this one is given already (a module or checkpoint); leave them out"
                )
            self.network = network
            self.spec = ModelSpec.create(
                type(network).__name__.lower(), scale, degradation, options
            )
        else:
            check_network_options(network, options)
            self.spec = ModelSpec.create(network, scale, degradation, options)
            self.network = self.spec.build()
        if getattr(self.network, "grid", self.spec.grid) != self.spec.grid:
            raise MRSRError(
                f"network samples on the {self.network.grid!r} grid, which does not fit "
                f"degradation {degradation!r}; pass the degradation it was made for"
            )
        self.batch_size, self.axis = batch_size, axis
        self.device = resolve_device(device)
        self.tta, self.precision, self.progress = (
            tta,
            resolve_precision(precision, self.device),
            progress,
        )
        self.data_consistency, self.nonnegative = float(data_consistency), nonnegative
        self.name = network if isinstance(network, str) else type(network).__name__.lower()
        self.through_plane_budget = float(through_plane_budget)
        self.slice_thickness, self.slice_profile = slice_thickness, slice_profile
        self.weights: Path | None = None  # the checkpoint file the network's weights came from

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        scale: int | None = None,
        degradation: str | None = None,
        **kwargs: Any,
    ) -> Pipeline:
        """Load a checkpoint file, or a default model by name (see ``mrsr models``).

        ``scale`` and ``degradation`` are the checkpoint's; given, they must agree with it
        (a given scale then counts as asked for, see :class:`Pipeline`). ``kwargs``: the
        other options of :class:`Pipeline`.
        """
        OPTIONS["path"].check(name_or_path, "name_or_path")
        path = weights_path(name_or_path)
        spec, model = load_checkpoint(path)
        if scale is not None and OPTIONS["scale"].check(scale, "scale") != spec.scale:
            raise MRSRError(
                f"{name_or_path}: a x{spec.scale} model, but --scale {scale} was asked for"
            )
        if degradation is not None and degradation != spec.degradation:
            raise MRSRError(
                f"{name_or_path}: a model of {spec.degradation} degradation, but degradation "
                f"{shown(degradation)} was asked for"
            )
        pipe = cls(model, spec.scale, degradation=spec.degradation, **kwargs)
        pipe.spec, pipe.name, pipe.weights = spec, Path(name_or_path).name, path
        pipe.scale_given = scale is not None
        return pipe

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def trained(self) -> bool:
        """Whether the weights come from training (parameter-free baselines count as trained)."""
        has_weights = any(True for _ in self.network.parameters())
        return bool(self.spec.info.get("trained")) or not has_weights

    def __call__(
        self,
        x: Any,
        affine: np.ndarray | None = None,
        *,
        voxel_size: float | tuple[float, float, float] | None = None,
        like: Any = None,
    ) -> MetaTensor:
        """The super-resolved volume (float32 MetaTensor with the fine grid's affine).

        With ``voxel_size`` (mm: one value, or one per voxel axis) the output covers the input's
        field of view at that voxel size; with ``like`` (a volume file or MetaTensor) it lies
        exactly on that volume's grid, whatever its orientation. How each axis gets there is
        :meth:`plan`'s. A path's header is checked first, and the whole job (reading,
        super-resolving, resampling) must fit in the memory available.
        """
        volume = self._input(x, affine)
        plan = self.plan(volume, voxel_size, like)
        return self._run(volume) if plan is None else self._onto(volume, plan, self._thickness(x))

    def _thickness(self, x: Any) -> float | None:
        """The slice thickness in mm: this pipeline's, else the input header's (DICOM)."""
        if self.slice_thickness is None and isinstance(x, (str, os.PathLike)):
            return inspect_volume(x).slice_thickness
        return self.slice_thickness

    def plan(self, volume: Any, voxel_size: Any = None, like: Any = None) -> GridPlan | None:
        """How ``volume`` reaches the grid of ``voxel_size`` or ``like`` (``None``: neither
        given): :func:`mrsr.target.plan_grid` with this pipeline's scale, which must be the one
        the grid needs when it was given explicitly (:func:`mrsr.target.check_scale`)."""
        volume = as_volume(volume, name="volume")
        grid = target_grid(volume, voxel_size, like)
        if grid is None:
            return None
        affine = np.asarray(volume.affine, dtype=np.float64)
        axis = slice_axis(affine, volume.meta) if self.axis is None else self.axis
        through = self.through_plane_budget > 0
        plan = plan_grid(
            volume.shape[1:], affine, axis, *grid, scale=self.scale, through_plane=through
        )
        if self.scale_given:
            check_scale(plan, self.scale, voxel_size, like)
        return plan

    def _input(self, x: Any, affine: np.ndarray | None) -> MetaTensor:
        if isinstance(x, (str, os.PathLike)):
            info = inspect_volume(x)
            check_fits(
                read_bytes(info) + peak_bytes(info.voxels, info.channels, self.scale),
                f"{one_line(x)}: super-resolving {'x'.join(map(str, info.shape))} x{self.scale}",
            )
        volume = as_volume(x, affine)
        refuse_label_map(
            volume, "super-resolving", None if isinstance(x, (str, os.PathLike)) else "x"
        )
        return volume

    def _onto(
        self, volume: MetaTensor, plan: GridPlan, thickness: float | None = None
    ) -> MetaTensor:
        """In-plane network, through-plane network, resampling: each step the plan says, each
        checked against the memory available first; the plan is said first (one line on
        stderr) when ``progress`` is on."""
        from mrsr.throughplane import super_resolve_through_plane

        if self.progress:
            note(one_line(plan.describe()))
        sizes = np.asarray(spacing(np.asarray(volume.affine)))
        fine = [n * (plan.scale if a != plan.axis else 1) for a, n in enumerate(volume.shape[1:])]
        if plan.through_plane:
            fine[plan.axis] = round(fine[plan.axis] * sizes[plan.axis] / plan.through_plane)
        check_fits(
            volume.shape[0] * (resample_bytes(fine, plan.shape) + 16 * math.prod(fine)),
            f"super-resolving onto {'x'.join(map(str, fine))}, then resampling",
        )
        result = self._run(volume) if plan.scale > 1 else volume
        if plan.through_plane:
            result = super_resolve_through_plane(
                result,
                time_budget=self.through_plane_budget,
                thickness=thickness,
                profile=self.slice_profile,
                fine_spacing=plan.through_plane,
                axis=plan.axis,
                nonnegative=self.nonnegative,
                batch_size=self.batch_size,
                device=self.device,
                progress=self.progress,
            )
        result = resample(result, plan.shape, plan.affine, band_limited=plan.in_plane_axes)
        add_facts(result, range_facts(clamp_volume(result, volume, self.nonnegative)))
        return result

    def _run(self, volume: MetaTensor) -> MetaTensor:
        return super_resolve(
            volume,
            self.network,
            self.spec.scale,
            self.spec.grid,
            axis=self.axis,
            normalisation=self.spec.normalisation,
            batch_size=self.batch_size,
            device=self.device,
            tta=self.tta,
            precision=self.precision,
            data_consistency=self.data_consistency,
            nonnegative=self.nonnegative,
            progress=self.progress,
        )

    def fit(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        output_dir: str | os.PathLike = "runs/mrsr",
        resume: bool = False,
        **train_options: Any,
    ) -> Path:
        """Train this pipeline's network on volumes (see ``pipelines/README.md`` for options).

        ``train_options`` are keys of the config's ``train`` section (``max_steps``,
        ``batch_size``, ``patch_size``, ``lr``, ...). A pipeline whose weights came from a
        checkpoint (:meth:`from_pretrained`, or an earlier ``fit``) is fine-tuned from them
        (``init``), an untrained one starts from scratch. The best weights are loaded into this
        pipeline; returns the checkpoint path.
        """
        from mrsr.training import resolve_config
        from mrsr.training import train as run

        OPTIONS["path"].check(output_dir, "output_dir")
        OPTIONS["resume"].check(resume, "resume")
        raw = {
            "data": {"train": train, "val": val},
            "degradation": {"method": self.spec.degradation, "scale": self.spec.scale},
            "model": {"name": self.spec.network, **self.spec.options},
            "train": {"init": None if self.weights is None else str(self.weights), **train_options},
            "output_dir": str(output_dir),
        }
        path = run(
            resolve_config(raw, origin="Pipeline.fit"), resume=resume, progress=self.progress
        )
        self.spec, self.network = load_checkpoint(path)
        self.weights = path
        return path

    def evaluate(
        self, x: Any, ref: Any, mask: Any = "auto", shave: int | None = None
    ) -> dict[str, float]:
        """PSNR, SSIM and NRMSE of ``self(x)`` against the reference volume ``ref``.

        ``mask``: ``"auto"`` (Otsu foreground of the reference), ``"none"`` or ``None``, a mask
        file (its non-zero voxels), or an array; ``shave`` defaults to the scale. The grids must
        agree (shape and affine). ``ref`` and ``mask`` are checked before any work.
        """
        shave = self.scale if shave is None else OPTIONS["shave"].check(shave, "shave")
        reference = as_volume(ref, name="ref")
        if isinstance(mask, os.PathLike) or (isinstance(mask, str) and mask not in MASKS):
            mask = as_volume(mask, name="mask").as_tensor()[0] != 0
        elif not (mask is None or isinstance(mask, (str, np.ndarray, torch.Tensor))):
            raise MRSRError(
                f"mask must be {' or '.join(map(repr, MASKS))}, None, a mask file or an array, "
                f"got {type(mask).__name__}"
            )
        return score(self(x), reference, mask=mask, shave=shave)

    def save(
        self,
        x: Any,
        path: str | os.PathLike,
        affine: np.ndarray | None = None,
        dtype: str = "float32",
        overwrite: bool = False,
        *,
        voxel_size: float | tuple[float, float, float] | None = None,
        like: Any = None,
    ) -> Path:
        """Super-resolve ``x`` (onto the grid of ``voxel_size`` or ``like``, as
        :meth:`__call__`) and write the result as NIfTI (atomically).

        The output is planned first (:func:`mrsr.outputs.plan_outputs`: not an input or the
        reference, not a folder, writable, existing only with ``overwrite``) and locked while
        it is written; its size must fit in the folder's free space.
        """
        job = self._open(x, path, affine, dtype, overwrite, voxel_size, like)
        return self._write(job, self._make(job))

    def save_all(
        self,
        jobs: Iterable[tuple[Any, str | os.PathLike]],
        dtype: str = "float32",
        overwrite: bool = False,
        *,
        voxel_size: float | tuple[float, float, float] | None = None,
        like: Any = None,
        overlap: bool = True,
    ) -> list[Path]:
        """:meth:`save` each ``(input, output)`` of ``jobs`` (pairs: ``zip(inputs, outputs)``);
        returns the outputs in job order once all are done.

        One volume that fails does not stop the rest; if any failed, an
        :class:`~mrsr.errors.MRSRError` afterwards names them (an unforeseen failure is raised
        as itself). :meth:`save_each` gives each outcome as it comes.
        """
        outcomes = dict(
            self.save_each(
                jobs, dtype, overwrite, voxel_size=voxel_size, like=like, overlap=overlap
            )
        )
        failed = {k: o for k, o in outcomes.items() if isinstance(o, BaseException)}
        bug = next((o for o in failed.values() if not isinstance(o, MRSRError)), None)
        if bug is not None:
            raise bug
        if failed:
            k, first = next(iter(failed.items()))
            raise MRSRError(
                f"{len(failed)} of {len(outcomes)} volumes not saved; job {k}: {first}"
            ) from first
        return list(outcomes.values())

    def save_each(
        self,
        jobs: Iterable[tuple[Any, str | os.PathLike]],
        dtype: str = "float32",
        overwrite: bool = False,
        *,
        voxel_size: float | tuple[float, float, float] | None = None,
        like: Any = None,
        overlap: bool = True,
        started: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, Path | BaseException]]:
        """:meth:`save` each ``(input, output)`` of ``jobs``, one at a time as the returned
        iterator is consumed (nothing is done before): yields ``(index, output path or the
        exception that stopped it)`` in job order, so one bad volume does not stop the rest.
        The arguments are checked at the call.

        With ``overlap`` the next input is read and the previous output written in background
        threads while the network works on the current volume: at most one volume ahead and
        one behind, the outputs identical to sequential :meth:`save` calls. ``started(k)`` is
        called as the work on job ``k`` begins (a progress line, say).
        """
        if isinstance(jobs, (str, bytes, os.PathLike)) or not isinstance(jobs, Iterable):
            raise MRSRError(
                f"jobs must be (input, output) pairs, e.g. zip(inputs, outputs), got {shown(jobs)}"
            )
        jobs = list(jobs)
        for k, job in enumerate(jobs):
            if not (isinstance(job, (tuple, list)) and len(job) == 2):
                raise MRSRError(
                    f"jobs[{k}] must be an (input, output) pair, got {shown(job)}; pair each "
                    "input with its output: zip(inputs, outputs) with as many of each"
                )
        check_options({"dtype": dtype, "overwrite": overwrite, "overlap": overlap}, OPTIONS, "")
        if not (started is None or callable(started)):
            raise MRSRError(f"started must be a function of the job's index, got {shown(started)}")
        return self._save_each(jobs, (dtype, overwrite, voxel_size, like), overlap, started)

    def _save_each(
        self,
        jobs: list[tuple[Any, str | os.PathLike]],
        options: tuple,
        overlap: bool,
        started: Callable[[int], None] | None,
    ) -> Iterator[tuple[int, Path | BaseException]]:
        started = started or (lambda k: None)
        if not overlap:
            for k, (x, path) in enumerate(jobs):
                started(k)
                try:
                    job = self._open(x, path, None, *options)
                    outcome = self._write(job, self._make(job))
                except Exception as exc:  # noqa: BLE001 - reported per volume by the caller
                    outcome = exc
                yield k, outcome
            return
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mrsr-io") as pool:

            def read(k: int) -> Future | None:
                if k >= len(jobs):
                    return None
                x, path = jobs[k]
                return pool.submit(self._open, x, path, None, *options)

            reading, writing = read(0), None
            for k in range(len(jobs)):
                try:
                    job = reading.result()
                except Exception as exc:  # noqa: BLE001 - this volume's failure, reported in turn
                    job = exc
                reading = read(k + 1)  # read ahead while this one is computed
                started(k)
                if not isinstance(job, BaseException):
                    try:
                        made = self._make(job)  # releases the lock if it fails
                    except Exception as exc:  # noqa: BLE001 - as above
                        job = exc
                if writing is not None:
                    yield _finished(*writing)
                if isinstance(job, BaseException):
                    writing = None
                    yield k, job
                else:
                    writing = k, pool.submit(self._write, job, made)
            if writing is not None:
                yield _finished(*writing)

    def _open(
        self,
        x: Any,
        path: str | os.PathLike,
        affine: np.ndarray | None,
        dtype: str,
        overwrite: bool,
        voxel_size: Any,
        like: Any,
    ) -> _Job:
        """Plan and lock the output, then read and check the input and its grid plan."""
        check_options({"path": path, "dtype": dtype, "overwrite": overwrite}, OPTIONS, "")
        path = Path(path)
        source = Path(x) if isinstance(x, (str, os.PathLike)) else None
        reference = [Path(like)] if isinstance(like, (str, os.PathLike)) else []
        plan = plan_outputs([(source, path)], overwrite=overwrite, references=reference)
        lock = contextlib.ExitStack()
        lock.enter_context(claim(path, plan))
        try:
            if source is not None and voxel_size is None and like is None:
                check_space(path, inspect_volume(source).voxels * self.scale**2 * 4)
            volume = self._input(x, affine)
            grid = self.plan(volume, voxel_size, like)
            if grid is not None:  # its size needs the input's affine
                check_space(path, volume.shape[0] * math.prod(grid.shape) * 4)
            thickness = self._thickness(x)
            return _Job(path, lock, volume, grid, thickness, dtype, overwrite, self.progress)
        except BaseException:
            lock.close()
            raise

    def _make(self, job: _Job) -> tuple[MetaTensor, dict]:
        """The result and its provenance (the lock is released on failure)."""
        grid, thickness = job.grid, job.thickness
        try:
            if grid is None:
                result = self._run(job.volume)
            else:
                result = self._onto(job.volume, grid, thickness)
        except BaseException:
            job.release()
            raise
        network_ran = grid is None or grid.scale > 1
        settings = {
            "model": self.name if network_ran else None,
            "network": self.spec.network if network_ran else None,
            "scale": self.scale if grid is None else grid.scale,
            "degradation": self.spec.degradation,
            "precision": self.precision,
            "tta": self.tta,
            "data_consistency": self.data_consistency,
            "grid_plan": None if grid is None else grid.describe(),
            "through_plane_budget_s": self.through_plane_budget if grid else None,
            "slice_thickness_mm": thickness if grid and grid.through_plane else None,
            "slice_profile": self.slice_profile if grid and grid.through_plane else None,
        }
        return result, record("upscale", job.volume, result, **settings)

    @staticmethod
    def _write(job: _Job, made: tuple[MetaTensor, dict]) -> Path:
        result, provenance = made
        if job.progress:  # a big gzipped volume takes seconds: say so
            note(one_line(f"writing {job.path}"))
        try:
            return save_volume(
                result, job.path, dtype=job.dtype, overwrite=job.overwrite, provenance=provenance
            )
        finally:
            job.release()


@dataclass
class _Job:
    """One output being made: its path and lock, the input read, the grid plan."""

    path: Path
    lock: contextlib.ExitStack
    volume: MetaTensor
    grid: GridPlan | None
    thickness: float | None
    dtype: str
    overwrite: bool
    progress: bool

    def release(self) -> None:
        self.lock.close()


def _finished(k: int, write: Future) -> tuple[int, Path | BaseException]:
    """A background write's outcome: the path written, or the exception that stopped it."""
    try:
        return k, write.result()
    except Exception as exc:  # noqa: BLE001 - the write's failure, reported by the caller
        return k, exc


def default_model_name(scale: int, degradation: str = "kspace") -> str:
    """Name of the shipped default model for a scale and degradation."""
    return f"cssfn-{degradation}-x{scale}"


def load_model(
    model: str | None, scale: int | None = None, degradation: str = "kspace", **kwargs: Any
) -> Pipeline:
    """Resolve a ``--model`` value: a checkpoint path, a shipped model name, or a network name.

    ``None`` picks the shipped default for ``scale`` (2 unless given) and ``degradation``; a
    network name is built for that degradation. A checkpoint's own scale
    must agree with ``scale`` when both are given; a network name is built at ``scale``.
    A ``scale`` given counts as asked for (:class:`Pipeline`).
    """
    if scale is not None:
        OPTIONS["scale"].check(scale, "--scale")
    if model is not None:
        model = os.fspath(OPTIONS["path"].check(model, "--model"))
    shipped = shipped_weights()
    if model is None:
        model = default_model_name(2 if scale is None else scale, degradation)
        if model not in shipped:
            raise MRSRError(
                f"no default model ships for {degradation} x{2 if scale is None else scale} yet; "
                "pass --model "
                "CHECKPOINT, or a "
                f"network or baseline name ({', '.join(networks.available())})"
            )
    if model in shipped or Path(model).exists() or model.endswith(".safetensors"):
        return Pipeline.from_pretrained(model, scale, **kwargs)
    if model.lower() in networks.available():
        return Pipeline(model, scale, degradation=degradation, **kwargs)
    raise MRSRError(
        f"{model}: not a checkpoint file, shipped model ({', '.join(sorted(shipped)) or 'none'}) "
        f"or network ({', '.join(networks.available())})"
    )
