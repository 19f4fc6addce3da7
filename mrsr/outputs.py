"""Output planning: every file a job will write, checked before any voxel is read.

:func:`plan_outputs` takes the whole list of (input, output) pairs of a job (one volume, a
folder, a degrade with its reference) and refuses, before any work:

- an output that is an input, or one of the files an input is made of (a detached header's data
  file, a DICOM series' slices), compared by resolved path and by inode (hard links too);
- an output inside an input DICOM folder, and a folder written into itself;
- two outputs that are one file (naming both inputs);
- an output that is a folder, a missing output folder, a folder where no file can be created;
- an existing output without ``overwrite`` (or skips it, for resumable folder runs).

While an output is written, :func:`claim` holds an advisory lock (``.NAME.lock`` beside it,
holding the writer's PID and host): a second run skips that output instead of deleting the
first run's temporary, and a lock left by a killed run is released by the kernel with it.
Temporaries of killed runs are removed only under the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mrsr.errors import MRSRError, one_line
from mrsr.io import remove_stale_temporaries
from mrsr.memory import human
from mrsr.provenance import check_sidecar, sidecar_path

__all__ = [
    "OutputBusy",
    "OutputPlan",
    "check_space",
    "claim",
    "output_name",
    "plan_folder",
    "plan_outputs",
]

INPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
OUTPUT_SUFFIXES = (".nii.gz", ".nii")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX") if folder.is_dir() else 255
    except (OSError, ValueError):
        return 255


class OutputBusy(MRSRError):
    """Another live run holds the output's lock."""


def output_name(path: Path) -> str:
    """The NIfTI output name of an input: the whole stem kept, only the volume suffix replaced.

    >>> output_name(Path("sub-01.ses-1.T1w.nrrd")), output_name(Path("a.b.nii"))
    ('sub-01.ses-1.T1w.nii.gz', 'a.b.nii')
    """
    name = path.name
    if name.lower().endswith((".nii.gz", ".nii")):
        return name
    for suffix in INPUT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + ".nii.gz"
    return name + ".nii.gz"  # a DICOM series folder


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _input_parts(source: Path) -> tuple[list[Path], list[Path]]:
    """(files, folders) that make up the input ``source``: the files must not be written over,
    nothing may be written inside the folders."""
    from mrsr.probe import data_files

    if source.is_dir():
        return [p for p in source.iterdir() if p.is_file()], [source.resolve()]
    files = [source]
    if source.suffix.lower() in (".nhdr", ".mhd") and source.is_file():
        with contextlib.suppress(MRSRError, OSError):
            files += data_files(source)
    return files, []


@dataclass
class OutputPlan:
    """The checked plan: ``jobs`` to run, ``finished`` outputs skipped, the inputs' files."""

    jobs: list[tuple[Path | None, Path]]
    finished: list[Path] = field(default_factory=list)
    protected: set = field(default_factory=set)

    def is_protected(self, path: Path) -> bool:
        return path.resolve() in self.protected or _key(path) in self.protected


WRITE_PROBE = ".mrsr-write-test."


def _lock_path(output: Path) -> Path:
    return output.parent / f".{output.name}.lock"


def _check_writable(folder: Path) -> None:
    """Refuse a folder where no file can be created, by creating one; removes it, and any
    such probe a run killed meanwhile left (a live run's vanishing early does no harm)."""
    try:
        fd, _ = tempfile.mkstemp(prefix=WRITE_PROBE, dir=folder)
    except OSError as exc:
        raise MRSRError(f"{folder}: cannot write here ({exc.strerror})") from exc
    os.close(fd)
    _remove_probes(folder)


def _remove_probes(folder: Path) -> None:
    for probe in folder.glob(f"{WRITE_PROBE}*"):
        with contextlib.suppress(OSError):  # gone already, or a read-only folder
            probe.unlink(missing_ok=True)


def plan_outputs(
    jobs: Sequence[tuple[Path | None, Path]],
    overwrite: bool = False,
    skip_finished: bool = False,
    references: Sequence[Path] = (),
) -> OutputPlan:
    """Check every output of ``jobs`` (``(input or None, output)`` pairs) before any work;
    ``references`` are further inputs every job reads (``--like``), protected alike.

    Raises :class:`MRSRError` for the first problem found; with ``skip_finished`` an existing
    output is left alone and listed in ``finished`` instead (unless ``overwrite``), and what a
    killed run left beside it (lock, temporaries) is removed unless a live run holds its lock.
    """
    plan = OutputPlan([])
    folders: list[Path] = []
    sources = {src for src, _ in jobs if src is not None} | {Path(r) for r in references}
    for src in sources:
        files, trees = _input_parts(src)
        folders += trees
        for f in files:
            plan.protected |= {f.resolve(), _key(f)} - {None}
    seen: dict[Path, Path | None] = {}
    for src, out in jobs:
        out = Path(out)
        resolved = out.resolve()
        named = f"{one_line(out)}"
        if out.is_dir():
            raise MRSRError(f"{named}: is a folder; give an output file name")
        if out.exists() and not out.is_file():
            raise MRSRError(f"{named}: is not a regular file (a device or a pipe?); refused")
        if not out.name.lower().endswith(OUTPUT_SUFFIXES):
            raise MRSRError(f"{named}: outputs are NIfTI; name it .nii.gz or .nii")
        if len(os.fsencode(f".{out.name}.12345678.tmp.nii.gz")) > _name_max(resolved.parent):
            raise MRSRError(f"{named}: the file name is too long for its temporary; shorten it")
        if not resolved.parent.is_dir():
            raise MRSRError(f"{one_line(out.parent)}: output folder does not exist")
        if plan.is_protected(out) or plan.is_protected(_lock_path(out)):
            raise MRSRError(
                f"{named}: output path equals the input or one of its files; choose another name"
            )
        inside = [f for f in folders if resolved.is_relative_to(f)]
        if inside:
            raise MRSRError(
                f"{named}: would be written into the input folder {one_line(inside[0])}; "
                "choose another output folder"
            )
        if resolved in seen:
            first = seen[resolved]
            raise MRSRError(
                f"{named}: both {one_line(first or 'an output')} and {one_line(src or 'another')} "
                "would be written here; rename one of the inputs or give other output names"
            )
        seen[resolved] = src
        sidecar = check_sidecar(out, overwrite or out.exists())  # a finished one is skipped
        if plan.is_protected(sidecar):
            raise MRSRError(f"{one_line(sidecar)}: the sidecar would replace an input file")
        if sidecar.resolve() in seen:
            raise MRSRError(f"{named}: its sidecar {one_line(sidecar)} is another output")
        seen[sidecar.resolve()] = src
        if out.exists() and not overwrite:
            if not skip_finished:
                raise MRSRError(f"{named}: already exists; pass --overwrite to replace it")
            plan.finished.append(out)
            continue
        plan.jobs.append((src, out))
    for folder in {out.resolve().parent for _, out in plan.jobs}:
        _check_writable(folder)
    for out in plan.finished:  # a kill after its rename left its lock, maybe temporaries
        with contextlib.suppress(OutputBusy), claim(out, plan):
            pass
    for folder in {out.resolve().parent for out in plan.finished}:
        _remove_probes(folder)
    return plan


def plan_folder(source: Path, dest: Path, inputs: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(input, output) pairs of a folder run; refuses writing a folder into itself."""
    if dest.exists() and dest.resolve() == source.resolve():
        raise MRSRError(f"{one_line(dest)}: is the input folder; give another output folder")
    return [(p, dest / output_name(p)) for p in inputs]


def check_space(output: Path, nbytes: int) -> None:
    """Refuse an output whose estimated size does not fit in its folder's free space."""
    free = shutil.disk_usage(output.resolve().parent).free
    if nbytes > free:
        raise MRSRError(
            f"{one_line(output)}: needs about {human(nbytes)} of disk, only {human(free)} free"
        )


def _holder(lock: Path) -> str:
    try:
        pid, _, host = lock.read_text(encoding="utf-8", errors="replace").partition(" ")
    except OSError:
        return "another run"
    return f"pid {one_line(pid.strip()[:20])} on {one_line(host.strip()[:80])}"


@contextlib.contextmanager
def claim(output: Path, plan: OutputPlan | None = None) -> Iterator[None]:
    """Hold ``output``'s lock while the block writes it; remove a killed run's temporaries.

    Raises :class:`OutputBusy` when a live run holds the lock.
    """
    lock = _lock_path(output)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputBusy(
                f"{one_line(output)}: being written by another mrsr run ({_holder(lock)}); "
                "left to it"
            ) from None
        if _same(fd, lock):
            break
        os.close(fd)  # the lock file was replaced while we waited: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        keep = plan.is_protected if plan else lambda p: False
        for path in (output, sidecar_path(output)):  # a kill may hit either write
            remove_stale_temporaries(path, keep)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _same(fd: int, path: Path) -> bool:
    st = os.fstat(fd)
    return _key(path) == (st.st_dev, st.st_ino)
