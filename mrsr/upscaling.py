"""A :class:`mrsr.Pipeline` at work: its route onto a target grid (:func:`onto`), and its
task in the job runner (:class:`Upscaling`, :mod:`mrsr.batch`) with the methods that write
its outputs (:class:`Saving`)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.data import MetaTensor

from mrsr.batch import Batch, Job, Made, check_pairs, gather
from mrsr.errors import MRSRError, one_line, shown
from mrsr.geometry import spacing
from mrsr.intensity import clamp_volume, range_facts
from mrsr.memory import check_fits
from mrsr.options import OPTIONS, check_options
from mrsr.progress import note
from mrsr.provenance import add_facts, record, through_plane_settings
from mrsr.resample import resample, resample_bytes
from mrsr.target import GridPlan

if TYPE_CHECKING:
    from mrsr.pipeline import Pipeline

__all__ = ["Saving", "Upscaling", "onto"]


class Saving:
    """The methods of :class:`mrsr.Pipeline` that write its outputs, through the job runner."""

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
        it is written; its size must fit in the folder's free space (:mod:`mrsr.batch`).
        """
        return self.batch(dtype, overwrite, voxel_size, like).one(Job(x, (path,), affine))

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
        target = dict(voxel_size=voxel_size, like=like)
        return gather(self.save_each(jobs, dtype, overwrite, **target, overlap=overlap))

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
        pairs = check_pairs(jobs)
        check_options({"dtype": dtype, "overwrite": overwrite, "overlap": overlap}, OPTIONS, "")
        if not (started is None or callable(started)):
            raise MRSRError(f"started must be a function of the job's index, got {shown(started)}")
        runner = self.batch(dtype, overwrite, voxel_size, like)
        return runner.each([Job(x, (out,)) for x, out in pairs], overlap=overlap, started=started)

    def batch(
        self,
        dtype: str = "float32",
        overwrite: bool = False,
        voxel_size: Any = None,
        like: Any = None,
        choose: Callable[[MetaTensor], Pipeline] | None = None,
    ) -> Batch:
        """The job runner (:class:`mrsr.batch.Batch`) that super-resolves each input with this
        pipeline (or the one ``choose`` picks for the volume read) onto the grid of
        ``voxel_size`` or ``like``, and writes it as ``dtype``."""
        return Batch(
            Upscaling(self, voxel_size, like, choose),
            dtype=dtype,
            overwrite=overwrite,
            progress=self.settings.progress,
            references=[Path(like)] if isinstance(like, (str, os.PathLike)) else [],
        )


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
        volume = pipe._input(job.source, job.affine, info)
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
            pipe.through_plane_budget if grid else None,
            thickness if through else None,
            pipe.slice_profile if through else None,
        ),
    )


def onto(
    pipe: Pipeline, volume: MetaTensor, plan: GridPlan, thickness: float | None = None
) -> MetaTensor:
    """``volume`` super-resolved by ``pipe`` onto ``plan``'s grid: in-plane network,
    through-plane network, resampling, each step the plan says, each checked against the memory
    available first; the plan is said first (one line on stderr) when ``progress`` is on."""
    from mrsr.throughplane import super_resolve_through_plane

    settings = pipe.settings
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
            time_budget=pipe.through_plane_budget,
            thickness=thickness,
            profile=pipe.slice_profile,
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
