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
Temporaries of killed runs are removed only under the lock. A lock is created new (never
opened for writing when it exists); an output, its sidecar or its lock that is a link, a pipe
or a device is refused (:func:`mrsr.files.check_regular`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mrsr.errors import MRSRError, one_line
from mrsr.files import (
    check_regular,
    create_new,
    open_regular,
    remove_stale_temporaries,
    temporary_name,
    write_error,
)
from mrsr.io.formats import reader_for, volume_stem, volume_suffix
from mrsr.io.writer import OUTPUT_SUFFIXES, check_output_name
from mrsr.memory import human
from mrsr.provenance import check_sidecar, sidecar_path

__all__ = [
    "OutputBusy",
    "OutputPlan",
    "check_folder_name",
    "check_space",
    "claim",
    "output_name",
    "plan_folder",
    "plan_outputs",
]

# what else mrsr writes, besides volumes
FILE_SUFFIXES = (".json", ".csv", ".tsv", ".md", ".txt", ".png", ".pdf", ".html", ".safetensors")
FILE_SUFFIXES += (".yaml", ".yml")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX") if folder.is_dir() else 255
    except (OSError, ValueError):
        return 255


class OutputBusy(MRSRError):
    """Another live run holds the output's lock."""


def output_name(path: Path) -> str:
    """The NIfTI output name of an input: a NIfTI name as it is, else the whole stem
    (:func:`mrsr.io.volume_stem`) with ``.nii.gz``.

    >>> output_name(Path("sub-01.ses-1.T1w.nrrd")), output_name(Path("a.b.nii"))
    ('sub-01.ses-1.T1w.nii.gz', 'a.b.nii')
    """
    if path.name.lower().endswith(OUTPUT_SUFFIXES):
        return path.name
    return volume_stem(path) + ".nii.gz"


def check_folder_name(folder: Path, what: str) -> None:
    """Refuse a name like a file's (``out.nii.gz``, ``report.md``) for ``what``, a folder."""
    name = folder.name.lower()
    suffix = volume_suffix(folder) or next((s for s in FILE_SUFFIXES if name.endswith(s)), None)
    if suffix:
        raise MRSRError(
            f"{one_line(folder)}: named like a file ({suffix}), but {what} is a folder; give "
            "a folder name"
        )


def _real(path: Path) -> Path:
    """``path`` with its links resolved, as far as they go (a link loop stays as it is)."""
    return Path(os.path.realpath(path))


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _input_parts(source: Path) -> tuple[list[Path], list[Path]]:
    """(files, folders) that make up the input ``source``: the files must not be written over,
    nothing may be written inside the folders."""
    if source.is_dir():
        try:
            return [p for p in source.iterdir() if p.is_file()], [_real(source)]
        except OSError:  # unreadable: its read fails in turn, naming it
            return [], [_real(source)]
    files = [source]
    reader = reader_for(source)
    if reader is not None:  # a detached header's data files too
        with contextlib.suppress(MRSRError, OSError):
            files += reader.files(source)
    return files, []


@dataclass
class OutputPlan:
    """The checked plan: ``jobs`` to run, ``finished`` outputs skipped, the inputs' files."""

    jobs: list[tuple[Path | None, Path]]
    finished: list[Path] = field(default_factory=list)
    protected: set = field(default_factory=set)

    def is_protected(self, path: Path) -> bool:
        return _real(path) in self.protected or _key(path) in self.protected


WRITE_PROBE = ".mrsr-write-test."


def _lock_path(output: Path) -> Path:
    return output.parent / f".{output.name}.lock"


def _check_writable(folder: Path) -> None:
    """Refuse a folder where no file can be created, by creating one; removes it, and any
    such probe a run killed meanwhile left (a live run's vanishing early does no harm)."""
    try:
        create_new(folder / f"{WRITE_PROBE}{secrets.token_hex(4)}").close()
    except OSError as exc:
        raise MRSRError(f"{one_line(folder)}: cannot write here ({exc.strerror})") from exc
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
            plan.protected |= {_real(f), _key(f)} - {None}
    seen: dict[Path, Path | None] = {}
    for src, out in jobs:
        out = Path(out)
        resolved = _real(out)
        named = f"{one_line(out)}"
        if out.is_dir():
            raise MRSRError(f"{named}: is a folder; give an output file name")
        if plan.is_protected(out) or plan.is_protected(_lock_path(out)):
            raise MRSRError(
                f"{named}: output path equals the input or one of its files; choose another name"
            )
        exists = check_regular(out)
        check_output_name(out, named)
        if len(os.fsencode(temporary_name(out.name))) > _name_max(resolved.parent):
            raise MRSRError(f"{named}: the file name is too long for its temporary; shorten it")
        if not resolved.parent.is_dir():
            raise MRSRError(f"{one_line(out.parent)}: output folder does not exist")
        check_regular(_lock_path(out))
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
        sidecar = check_sidecar(out, overwrite or exists)  # a finished one is skipped
        if plan.is_protected(sidecar):
            raise MRSRError(f"{one_line(sidecar)}: the sidecar would replace an input file")
        if _real(sidecar) in seen:
            raise MRSRError(f"{named}: its sidecar {one_line(sidecar)} is another output")
        seen[_real(sidecar)] = src
        if exists and not overwrite:
            if not skip_finished:
                raise MRSRError(f"{named}: already exists; pass --overwrite to replace it")
            plan.finished.append(out)
            continue
        plan.jobs.append((src, out))
    for folder in {_real(out).parent for _, out in plan.jobs}:
        _check_writable(folder)
    for out in plan.finished:  # a kill after its rename left its lock, maybe temporaries
        with contextlib.suppress(OutputBusy), claim(out, plan):
            pass
    for folder in {_real(out).parent for out in plan.finished}:
        _remove_probes(folder)
    return plan


def plan_folder(source: Path, dest: Path, what: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs of a folder run: every volume of the folder ``source``
    (:func:`mrsr.io.list_volumes`) into the folder ``dest``, called ``what`` in messages.
    Refuses a folder without volumes, an output that is a file, a missing output parent and
    writing a folder into itself."""
    from mrsr.io.formats import FORMATS, list_volumes

    check_folder_name(dest, what)
    inputs = list_volumes(source)
    if not inputs:
        raise MRSRError(f"{one_line(source)}: no volumes found ({FORMATS})")
    if dest.exists() and not dest.is_dir():
        raise MRSRError(f"{one_line(dest)}: is a file; a folder input needs an output folder")
    if not dest.parent.is_dir():
        raise MRSRError(f"{one_line(dest.parent)}: output folder does not exist")
    if dest.exists() and _real(dest) == _real(source):
        raise MRSRError(f"{one_line(dest)}: is the input folder; give another output folder")
    return [(p, dest / output_name(p)) for p in inputs]


def check_space(output: Path, nbytes: int) -> None:
    """Refuse an output whose estimated size does not fit in its folder's free space."""
    free = shutil.disk_usage(_real(output).parent).free
    if nbytes > free:
        raise MRSRError(
            f"{one_line(output)}: needs about {human(nbytes)} of disk, only {human(free)} free"
        )


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace")
    except OSError:
        return "another run"
    pid, _, host = text.partition(" ")
    return f"pid {one_line(pid.strip()[:20])} on {one_line(host.strip()[:80])}"


def _locked(fd: int, lock: Path, output: Path) -> bool:
    """Whether the exclusive lock on ``fd`` was taken, and ``lock`` still names that file
    (``False``: it was replaced meanwhile). :class:`OutputBusy` when a live run holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputBusy(
            f"{one_line(output)}: being written by another mrsr run ({_holder(fd)}); left to it"
        ) from None
    except OSError as exc:
        raise MRSRError(
            f"{one_line(lock)}: cannot be locked ({exc.strerror}); write to a local disk"
        ) from exc
    st = os.fstat(fd)
    return _key(lock) == (st.st_dev, st.st_ino)


def _open_lock(lock: Path) -> tuple[int | None, bool]:
    """``(descriptor, new)``: a lock file created new, else the existing one opened for
    reading only (``None`` when it vanished meanwhile)."""
    create = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(lock, create, 0o644), True
    except FileExistsError:
        return open_regular(lock), False
    except OSError as exc:
        raise MRSRError(f"{one_line(lock)}: cannot be created ({exc.strerror})") from exc


def _take(lock: Path, output: Path) -> int:
    """A descriptor of a new lock file at ``lock``, locked; a dead run's lock is removed first
    (never written to)."""
    while True:
        fd, new = _open_lock(lock)
        if fd is None:
            continue
        try:
            taken = _locked(fd, lock, output)
            if taken and new:
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                return fd
            if taken:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)  # a dead run's: it goes, and a new one is made
        except BaseException as exc:
            if new:
                with contextlib.suppress(OSError):
                    os.unlink(lock)
            os.close(fd)
            if isinstance(exc, OSError):
                raise write_error(lock, exc) from exc
            raise
        os.close(fd)


@contextlib.contextmanager
def claim(output: Path, plan: OutputPlan | None = None) -> Iterator[None]:
    """Hold ``output``'s lock while the block writes it; remove a killed run's temporaries.

    Raises :class:`OutputBusy` when a live run holds the lock, :class:`MRSRError` when the lock
    is not a regular file.
    """
    lock = _lock_path(output)
    fd = _take(lock, output)
    try:
        keep = plan.is_protected if plan else lambda p: False
        for path in (output, sidecar_path(output)):  # a kill may hit either write
            remove_stale_temporaries(path, keep)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
