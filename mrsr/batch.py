"""Running the jobs of a command that writes volumes: one file, or every volume of a folder.

A job is one input (a file, or a volume given in Python) and the outputs made from it. A
:class:`Batch` runs a :class:`Task` (what the command does to one input) over its jobs:

- the outputs are planned once, before any work (:func:`mrsr.outputs.plan_outputs`: not an
  input, not a folder, writable, existing only with ``overwrite``), for all jobs at once
  by the caller (a command line refuses the first problem) or each job alone when it
  starts, so that its problem is its own;
- each job holds its outputs' locks (:func:`mrsr.outputs.claim`) while it runs: a second run
  on the same output is refused with :class:`mrsr.outputs.OutputBusy`;
- the input's header is read once (:attr:`Job.info`) and passed to the task, which checks
  memory and disk (:meth:`Job.need_space`) before it reads the voxels;
- the task's results are written with their provenance (:func:`mrsr.io.save_volume`);
- with ``overlap``, the next input is read and the previous results written in background
  threads while the current job computes (at most one ahead and one behind);
- one job that fails does not stop the others: each outcome is yielded in job order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from monai.data import MetaTensor

from mrsr.errors import MRSRError, one_line, shown
from mrsr.io import VolumeInfo, inspect_volume, save_volume
from mrsr.options import OPTIONS, check_options
from mrsr.outputs import OutputPlan, check_space, claim, plan_outputs
from mrsr.progress import note

__all__ = ["Batch", "Job", "Made", "Steps", "Task", "check_pairs", "gather"]

Made = list[tuple[MetaTensor, dict]]  # one (volume, provenance record) per output of the job


@dataclass
class Job:
    """One input and the outputs made from it; ``info`` is the input file's header, read once
    when the job opens (``None`` for a volume given in Python)."""

    source: Any
    outputs: tuple[Path, ...]
    affine: np.ndarray | None = None
    info: VolumeInfo | None = None
    locks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    data: Any = None  # what the task read from the input

    @property
    def path(self) -> Path | None:
        return Path(self.source) if isinstance(self.source, (str, os.PathLike)) else None

    def need_space(self, nbytes: int) -> None:
        """Refuse the job when ``nbytes`` would not fit beside each of its outputs."""
        for out in self.outputs:
            check_space(out, nbytes)


class Task(Protocol):
    """What a command does to one input: :meth:`read` it (under the outputs' locks, with its
    header in ``job.info``: check memory and disk first; kept as ``job.data``), then
    :meth:`make` the results."""

    def read(self, job: Job) -> Any: ...

    def make(self, job: Job) -> Made: ...


@dataclass(frozen=True)
class Steps:
    """A :class:`Task` of two functions."""

    read: Callable[[Job], Any]
    make: Callable[[Job], Made]


def check_pairs(jobs: Any) -> list[tuple[Any, Any]]:
    """``jobs`` as a list of ``(input, output)`` pairs, refused when it is not one."""
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
    return jobs


class Batch:
    """Run ``task`` over jobs, writing ``dtype`` (see the module's description). ``references``:
    further inputs every job reads (``--like``), protected from being written over."""

    def __init__(
        self,
        task: Task,
        *,
        dtype: str = "float32",
        overwrite: bool = False,
        progress: bool = False,
        references: Sequence[Path] = (),
    ) -> None:
        check_options({"dtype": dtype, "overwrite": overwrite}, OPTIONS, "")
        self.task, self.dtype, self.overwrite = task, dtype, overwrite
        self.progress, self.references = progress, list(references)

    def one(self, job: Job) -> Path:
        """Run one job; its first output's path, or its exception raised."""
        [(_, outcome)] = self.each([job], overlap=False)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def each(
        self,
        jobs: Sequence[Job],
        plan: OutputPlan | None = None,
        *,
        overlap: bool = True,
        started: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, Path | BaseException]]:
        """``(index, first output path or the exception that stopped the job)`` of each of
        ``jobs`` in order, as the iterator is consumed; ``plan``: of all their outputs, with
        ``overwrite`` and ``references`` as here (else each job is planned alone).
        ``started(k)`` is called as the work on job ``k`` begins."""
        started = started or (lambda k: None)
        if not overlap:
            for k, job in enumerate(jobs):
                started(k)
                try:
                    outcome = self._write(self._make(self._open(job, plan)))
                except Exception as exc:  # noqa: BLE001 - reported per job by the caller
                    outcome = exc
                yield k, outcome
            return
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mrsr-io") as pool:

            def read(k: int) -> Future | None:
                return pool.submit(self._open, jobs[k], plan) if k < len(jobs) else None

            reading, writing = read(0), None
            for k in range(len(jobs)):
                try:
                    job = reading.result()
                except Exception as exc:  # noqa: BLE001 - this job's failure, reported in turn
                    job = exc
                reading = read(k + 1)  # read ahead while this one is computed
                started(k)
                if not isinstance(job, BaseException):
                    try:
                        job = self._make(job)
                    except Exception as exc:  # noqa: BLE001 - as above
                        job = exc
                if writing is not None:
                    yield _finished(*writing)
                if isinstance(job, BaseException):
                    writing = None
                    yield k, job
                else:
                    writing = k, pool.submit(self._write, job)
            if writing is not None:
                yield _finished(*writing)

    def _open(self, job: Job, plan: OutputPlan | None) -> Job:
        """Plan (unless planned) and lock the outputs, read the header, then let the task read
        and check the input."""
        job.outputs = tuple(Path(OPTIONS["path"].check(out, "path")) for out in job.outputs)
        if plan is None:
            plan = plan_outputs(
                [(job.path, out) for out in job.outputs],
                overwrite=self.overwrite,
                references=self.references,
            )
        try:
            for out in job.outputs:
                job.locks.enter_context(claim(out, plan))
            if job.path is not None:
                job.info = inspect_volume(job.path)
            job.data = self.task.read(job)
            return job
        except BaseException:
            job.locks.close()
            raise

    def _make(self, job: Job) -> tuple[Job, Made]:
        """The task's results and their provenance (the locks are released on failure)."""
        try:
            return job, self.task.make(job)
        except BaseException:
            job.locks.close()
            raise

    def _write(self, made: tuple[Job, Made]) -> Path:
        job, results = made
        job.data = None  # the input's memory goes with the job
        try:
            for out, (volume, provenance) in zip(job.outputs, results):
                if self.progress:  # a big gzipped volume takes seconds: say so
                    note(one_line(f"writing {out}"))
                save_volume(
                    volume, out, dtype=self.dtype, overwrite=self.overwrite, provenance=provenance
                )
            return job.outputs[0]
        finally:
            job.locks.close()


def _finished(k: int, write: Future) -> tuple[int, Path | BaseException]:
    """A background write's outcome: the path written, or the exception that stopped it."""
    try:
        return k, write.result()
    except Exception as exc:  # noqa: BLE001 - the write's failure, reported by the caller
        return k, exc


def gather(outcomes: Iterable[tuple[int, Path | BaseException]]) -> list[Path]:
    """The paths of :meth:`Batch.each`'s outcomes in job order once all are done; raises
    afterwards when any job failed, naming how many (an unforeseen failure as itself)."""
    outcomes = dict(outcomes)
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
