"""Writing a pipeline's outputs: the methods of :class:`mrsr.Pipeline` that run it over
files through the job runner (:mod:`mrsr.batch`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import MetaTensor

from mrsr.batch import Batch, Job, check_pairs, gather
from mrsr.errors import MRSRError, shown
from mrsr.options import OPTIONS, check_options

__all__ = ["Saving"]


class Saving:
    """The methods of :class:`mrsr.Pipeline` that write its outputs through the job runner:
    its ``task(voxel_size, like, choose)`` is what it does to one input
    (:class:`mrsr.batch.Task`), its ``settings.progress`` whether it says what it writes."""

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
        choose: Callable[[MetaTensor], Any] | None = None,
    ) -> Batch:
        """The job runner (:class:`mrsr.batch.Batch`) that super-resolves each input with this
        pipeline (or the one ``choose`` picks for the volume read) onto the grid of
        ``voxel_size`` or ``like``, and writes it as ``dtype``."""
        return Batch(
            self.task(voxel_size, like, choose),
            dtype=dtype,
            overwrite=overwrite,
            progress=self.settings.progress,
            references=[Path(like)] if isinstance(like, (str, os.PathLike)) else [],
        )
