"""``mrsr.Pipeline``: one object from a low-resolution volume to a super-resolved NIfTI.

>>> from mrsr import Pipeline
>>> from mrsr.io import sample_path
>>> pipe = Pipeline("zerofill", scale=2)          # a baseline; or Pipeline.from_pretrained(path)
>>> pipe(sample_path()).shape
torch.Size([1, 360, 432, 24])
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from mrsr import degradations, networks, zoo
from mrsr.batch import Job, Made
from mrsr.checkpoint import ModelSpec, load_checkpoint
from mrsr.errors import MRSRError, one_line, shown
from mrsr.geometry import slice_axis, spacing
from mrsr.inference import SliceInferer, peak_bytes
from mrsr.intensity import clamp_volume, range_facts
from mrsr.io import VolumeInfo, as_volume, inspect_volume, read_bytes
from mrsr.labels import refuse_label_map
from mrsr.memory import check_fits
from mrsr.metrics import score
from mrsr.options import OPTIONS, check_network_options, check_options
from mrsr.progress import note
from mrsr.provenance import add_facts, record, through_plane_settings
from mrsr.resample import resample, resample_bytes
from mrsr.saving import Saving
from mrsr.settings import UPSCALE_THROUGH_PLANE_STEPS, InferenceSettings
from mrsr.slice_profiles import Profile, read_profile
from mrsr.target import GridPlan, check_scale, plan_grid, target_grid

__all__ = ["Pipeline", "as_volume", "load_model", "score"]

_INFER = InferenceSettings()  # the inference defaults
MASKS = ("auto", "none")  # the masks evaluate names: Otsu foreground of the reference, or none


class Pipeline(Saving):
    """Super-resolve MR volumes with a 2D network applied slice by slice.

    Args:
        network: a name of :func:`mrsr.networks.available` (built untrained, or a parameter-free
            baseline such as ``"zerofill"``), or an ``nn.Module``.
        scale: in-plane upscaling factor (default 2). Given explicitly, it must suit a target
            grid (``voxel_size``, ``like``): a grid that needs no network or another scale is
            refused (:func:`mrsr.target.check_scale`) rather than the scale silently unused.
        degradation: the acquisition model the network is for (a name of
            :data:`mrsr.degradations.DEGRADATIONS`); it fixes the sampling grid, hence the output
            affine.
        batch_size: slices per batch. This and the next seven are the
            :class:`mrsr.inference.InferenceSettings`, held as ``self.settings`` with the
            device and precision chosen (``self.device``, ``self.precision``).
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        axis: the slice axis (``None``: from the header).
        tta: average over flips (and quarter turns for square pixels).
        precision: ``"auto"`` (bf16 where the device computes it natively), ``"fp32"``, ``"bf16"``.
        data_consistency: weight 0 to 1 of the measured k-space block put back (``True``: 1).
        nonnegative: clamp at 0 (``None``: where the input has no negative voxel).
        progress: a bar on stderr.
        through_plane_steps: for a target grid finer along thick slices (:meth:`plan`):
            training steps of the through-plane network
            (:func:`mrsr.throughplane.super_resolve_through_plane`, seed 0; the default
            :data:`mrsr.settings.UPSCALE_THROUGH_PLANE_STEPS` takes about 2 minutes on a
            CPU; 0: cubic B-spline interpolation instead).
        through_plane_max_time: seconds after which that training stops even if the steps are
            not done (``None``, the default: no cap); the record says how many were.
        slice_thickness: the thick slices' thickness in mm (default: their spacing).
        slice_profile: their profile, a name of :data:`mrsr.slice_profiles.PROFILES` (default
            box with a thickness; with neither, shape and width are estimated from the scan,
            :func:`mrsr.profile_estimation.slice_profile_for`).
        slice_profile_file: a measured profile instead, a JSON file of weights
            (:func:`mrsr.slice_profiles.read_profile`), with its own width.
        inplane_acquired_resolution: the in-plane resolution the scan was acquired at, mm (one
            value, or one per in-plane axis; default: found from the spectrum,
            :func:`mrsr.inplane_resolution.acquired_resolution`).
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
        degradation: str = degradations.DEFAULT,
        batch_size: int = _INFER.batch_size,
        device: str = _INFER.device,
        axis: int | None = _INFER.axis,
        tta: bool = _INFER.tta,
        precision: str = _INFER.precision,
        data_consistency: float = _INFER.data_consistency,
        nonnegative: bool | None = _INFER.nonnegative,
        progress: bool = _INFER.progress,
        through_plane_steps: int = UPSCALE_THROUGH_PLANE_STEPS,
        through_plane_max_time: float | None = None,
        slice_thickness: float | None = None,
        slice_profile: str | None = None,
        slice_profile_file: str | os.PathLike | None = None,
        inplane_acquired_resolution: float | tuple[float, float] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(data_consistency, bool):  # True: weight 1
            data_consistency = float(data_consistency)
        inference = InferenceSettings(
            batch_size, device, axis, tta, precision, data_consistency, nonnegative, progress
        )
        check_options(
            {
                "network": network,
                "scale": 2 if scale is None else scale,
                "degradation": degradation,
                **asdict(inference),
                "through_plane_steps": through_plane_steps,
                "through_plane_max_time": through_plane_max_time,
                "slice_thickness": slice_thickness,
                "slice_profile": slice_profile,
                "slice_profile_file": slice_profile_file,
                "inplane_acquired_resolution": inplane_acquired_resolution,
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
        self.settings = inference.resolved()
        self.name = network if isinstance(network, str) else type(network).__name__.lower()
        self.through_plane_steps = int(through_plane_steps)
        self.through_plane_max_time = through_plane_max_time
        self.slice_thickness, self.slice_profile = slice_thickness, slice_profile
        measured = slice_profile_file is not None
        self.measured_profile = read_profile(slice_profile_file) if measured else None
        if measured and (slice_thickness or slice_profile):
            raise MRSRError(
                "slice_profile_file gives the profile and its width: leave out slice_profile "
                "and slice_thickness"
            )
        self.inplane_acquired_resolution = OPTIONS["inplane_acquired_resolution"].check(
            inplane_acquired_resolution, "inplane_acquired_resolution"
        )
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
        path = zoo.weights_path(name_or_path)
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
    def device(self) -> str:
        """The device the network runs on (``"auto"`` chosen)."""
        return self.settings.device

    @property
    def precision(self) -> str:
        """The precision the network runs in (``"auto"`` chosen)."""
        return self.settings.precision

    def inferer(self, **changes: Any) -> SliceInferer:
        """The network with this pipeline's settings (``changes``: some other, as
        ``data_consistency=1``), a function of a volume (:class:`mrsr.inference.SliceInferer`)."""
        spec, settings = self.spec, replace(self.settings, **changes)
        return SliceInferer(self.network, spec.scale, spec.grid, spec.normalisation, settings)

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
        info = inspect_volume(x) if isinstance(x, (str, os.PathLike)) else None
        volume = _input(x, affine, info, self.scale)
        plan = self.plan(volume, voxel_size, like)
        if plan is None:
            return self.inferer()(volume)
        return onto(self, volume, plan, self._thickness(info))

    def _thickness(self, info: VolumeInfo | None) -> float | None:
        """The slice thickness in mm: this pipeline's, else the input header's (DICOM)."""
        if self.slice_thickness is None and info is not None:
            return info.slice_thickness
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
        axis = self.settings.axis
        axis = slice_axis(affine, volume.meta) if axis is None else axis
        through = self.through_plane_steps > 0
        plan = plan_grid(
            volume.shape[1:], affine, axis, *grid, scale=self.scale, through_plane=through
        )
        if self.scale_given:
            check_scale(plan, self.scale, voxel_size, like)
        return plan

    def task(
        self,
        voxel_size: Any = None,
        like: Any = None,
        choose: Callable[[MetaTensor], Pipeline] | None = None,
    ) -> Upscaling:
        """What this pipeline does to one input in a job runner (:meth:`batch`)."""
        return Upscaling(self, voxel_size, like, choose)

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
        from mrsr.training import model_config
        from mrsr.training import train as run

        OPTIONS["path"].check(output_dir, "output_dir")
        OPTIONS["resume"].check(resume, "resume")
        cfg = model_config(
            self.spec, train, val, output_dir, self.weights, train_options, origin="Pipeline.fit"
        )
        path = run(cfg, resume=resume, progress=self.settings.progress)
        self.spec, self.network = load_checkpoint(path)
        self.weights = path
        return path

    def fuse(
        self,
        stacks: list[Any],
        voxel_size: float | tuple[float, float, float] | None = None,
        like: Any = None,
        *,
        register: bool = False,
        weight: float | None = None,
    ) -> MetaTensor:
        """Several stacks of one subject and contrast fused into one volume on the grid of
        ``voxel_size`` (covering the first stack's field of view) or ``like``
        (:func:`mrsr.fusion.fuse_stacks`): each stack brought onto that grid as
        ``self(stack, like=...)`` would (in-plane network, through-plane network, resampling),
        then the joint data-consistency solve of all stacks. ``register``: register each
        stack rigidly to the first one before; ``weight``: of the estimates (default
        :data:`mrsr.fusion.WEIGHT`)."""
        from mrsr.fusion import WEIGHT, fuse_stacks

        return fuse_stacks(
            stacks,
            voxel_size,
            like,
            register=register,
            thickness=self.slice_thickness,
            profile=self.measured_profile or self.slice_profile,
            weight=WEIGHT if weight is None else weight,
            nonnegative=self.settings.nonnegative,
            axis=self.settings.axis,
            estimate=lambda stack, plan, thickness, profile: onto(
                self, stack, plan, thickness, profile
            ),
            scale=self.scale,
            through_plane=self.through_plane_steps > 0,
            progress=self.settings.progress,
        )

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


def _input(x: Any, affine: np.ndarray | None, info: VolumeInfo | None, scale: int) -> MetaTensor:
    """The volume ``x`` checked, once its header ``info`` (a path's) says that super-resolving
    it ``scale`` times fits in memory."""
    if info is not None:
        check_fits(
            read_bytes(info) + peak_bytes(info.voxels, info.channels, scale),
            f"{one_line(x)}: super-resolving {'x'.join(map(str, info.shape))} x{scale}",
        )
    volume = as_volume(x, affine)
    refuse_label_map(volume, "super-resolving", None if info is not None else "x")
    return volume


@dataclass(frozen=True)
class Upscaling:
    """A :class:`Pipeline`'s task in a :class:`mrsr.batch.Batch`: read and check the input,
    plan its grid and check the output's size, super-resolve, record how."""

    pipe: Pipeline
    voxel_size: Any = None
    like: Any = None
    choose: Callable[[MetaTensor], Pipeline] | None = None

    def read(self, job: Job) -> tuple[Pipeline, MetaTensor, GridPlan | None]:
        pipe, info = self.pipe, job.info
        if info is not None and self.voxel_size is None and self.like is None:
            job.need_space(info.voxels * pipe.scale**2 * 4)
        volume = _input(job.source, job.affine, info, pipe.scale)
        pipe = pipe if self.choose is None else self.choose(volume)
        grid = pipe.plan(volume, self.voxel_size, self.like)
        if grid is not None:  # its size needs the input's affine
            job.need_space(volume.shape[0] * math.prod(grid.shape) * 4)
        return pipe, volume, grid

    def make(self, job: Job) -> Made:
        pipe, volume, grid = job.data
        thickness = pipe._thickness(job.info)
        result = pipe.inferer()(volume) if grid is None else onto(pipe, volume, grid, thickness)
        return [(result, _record(pipe, volume, result, grid, thickness))]


def _record(
    pipe: Pipeline, volume: MetaTensor, result: MetaTensor, grid: GridPlan | None, thickness: Any
) -> dict:
    """The provenance of ``result``, made by ``pipe`` from ``volume`` through ``grid``."""
    network_ran = grid is None or grid.scale > 1
    through = grid is not None and bool(grid.through_plane)
    return record(
        "upscale",
        volume,
        result,
        model=pipe.name if network_ran else None,
        network=pipe.spec.network if network_ran else None,
        scale=pipe.scale if grid is None else grid.scale,
        degradation=pipe.spec.degradation,
        precision=pipe.settings.precision,
        tta=pipe.settings.tta,
        data_consistency=pipe.settings.data_consistency,
        grid_plan=None if grid is None else grid.describe(),
        **through_plane_settings(
            steps=pipe.through_plane_steps if through else None,
            max_time_s=pipe.through_plane_max_time if through else None,
            thickness_mm=thickness if through else None,
            profile=pipe.slice_profile if through else None,
        ),
    )


def onto(
    pipe: Pipeline,
    volume: MetaTensor,
    plan: GridPlan,
    thickness: float | None = None,
    profile: str | Profile | None = None,
) -> MetaTensor:
    """``volume`` super-resolved by ``pipe`` onto ``plan``'s grid: in-plane network,
    through-plane network, resampling, each step the plan says, each checked against the memory
    available first; the plan is said first (one line on stderr) when ``progress`` is on.
    ``thickness`` (mm) and ``profile``: the slices' profile when the caller has resolved it
    already (default: ``pipe``'s, estimated from the volume when it has none)."""
    from mrsr.throughplane import super_resolve_through_plane

    settings = pipe.settings
    profile = profile or pipe.measured_profile or pipe.slice_profile
    if settings.progress:
        note(one_line(plan.describe()))
    sizes = np.asarray(spacing(np.asarray(volume.affine)))
    fine = [n * (plan.scale if a != plan.axis else 1) for a, n in enumerate(volume.shape[1:])]
    if plan.through_plane:
        fine[plan.axis] = round(fine[plan.axis] * sizes[plan.axis] / plan.through_plane)
    check_fits(
        volume.shape[0] * (resample_bytes(fine, plan.shape) + 16 * math.prod(fine)),
        f"super-resolving onto {'x'.join(map(str, fine))}, then resampling",
    )
    result = pipe.inferer()(volume) if plan.scale > 1 else volume
    if plan.through_plane:
        result = super_resolve_through_plane(
            result,
            steps=pipe.through_plane_steps,
            max_time=pipe.through_plane_max_time,
            thickness=None if isinstance(profile, Profile) else thickness,
            profile=profile,
            inplane_resolution=pipe.inplane_acquired_resolution,
            fine_spacing=plan.through_plane,
            axis=plan.axis,
            nonnegative=settings.nonnegative,
            batch_size=settings.batch_size,
            device=settings.device,
            progress=settings.progress,
        )
    result = resample(result, plan.shape, plan.affine, band_limited=plan.in_plane_axes)
    add_facts(result, range_facts(clamp_volume(result, volume, settings.nonnegative)))
    return result


def load_model(
    model: str | None,
    scale: int | None = None,
    degradation: str = degradations.DEFAULT,
    **kwargs: Any,
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
    shipped = zoo.shipped_weights()
    if model is None:
        model = zoo.default(2 if scale is None else scale, degradation).name
    if model in shipped or Path(model).exists() or model.endswith(".safetensors"):
        return Pipeline.from_pretrained(model, scale, **kwargs)
    if model.lower() in networks.available():
        return Pipeline(model, scale, degradation=degradation, **kwargs)
    raise MRSRError(
        f"{model}: not a checkpoint file, shipped model ({', '.join(sorted(shipped)) or 'none'}) "
        f"or network ({', '.join(networks.available())})"
    )
