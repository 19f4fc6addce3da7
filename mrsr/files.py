"""Files mrsr writes, and those it reads back (sidecars, locks, logs), handled safely.

No existing path is ever opened for writing: every file is created new
(``O_CREAT | O_EXCL | O_NOFOLLOW``) under a temporary name beside its target, written whole,
then renamed into place (:func:`atomic_files`). A link planted at any of these names can then
not redirect a write, and a kill leaves the old file or the new one, never a partial one. A file
mrsr reads back or replaces must be a regular file (:func:`check_regular`): a link, a folder, a
pipe or a device at its name is refused, and never opened (opening a pipe blocks forever).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from mrsr.errors import MRSRError, one_line

__all__ = [
    "NewFile",
    "atomic_files",
    "atomic_write",
    "check_regular",
    "create_new",
    "new_folder",
    "open_log",
    "open_regular",
    "read_regular",
    "remove_stale_temporaries",
    "temporary_name",
    "write_error",
]

NewFile = Callable[..., BinaryIO]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"


def _not_regular(path: str | os.PathLike, mode: int) -> MRSRError:
    return MRSRError(
        f"{one_line(path)}: is {_kind(mode)}, not a regular file; mrsr neither opens nor "
        "replaces it: remove it or choose another name"
    )


def check_regular(path: str | os.PathLike) -> bool:
    """Whether a regular file is at ``path`` (``False``: nothing is); :class:`MRSRError` when
    a link, a folder, a pipe or a device is (looked at, not opened)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise MRSRError(f"{one_line(path)}: cannot be looked at ({exc.strerror})") from exc
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    return True


def open_regular(path: str | os.PathLike) -> int | None:
    """A read-only descriptor of the regular file ``path`` (``None``: nothing is there);
    :class:`MRSRError`, without opening it, when it is anything else."""
    if not check_regular(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MRSRError(f"{one_line(path)}: cannot be read ({exc.strerror})") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # replaced since it was looked at
        os.close(fd)
        raise _not_regular(path, mode)
    return fd


def read_regular(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The content of the regular file ``path``; refused (:class:`MRSRError`) when it is
    missing, anything else (unopened) or larger than ``limit`` bytes."""
    fd = open_regular(path)
    if fd is None:
        raise MRSRError(f"{one_line(path)}: no such file")
    with os.fdopen(fd, "rb") as stream:
        size = os.fstat(fd).st_size
        if limit is not None and size > limit:
            raise MRSRError(f"{one_line(path)}: {size} bytes, more than the {limit} expected")
        return stream.read()


def create_new(path: str | os.PathLike) -> BinaryIO:
    """A new file at ``path``, open for writing; never an existing file, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), "wb")


def temporary_name(name: str, token: str = "12345678") -> str:
    """The name of a temporary of the file ``name``, as :func:`atomic_files` makes them."""
    return f".{name}.{token}.tmp"


def _temporary(target: Path) -> tuple[Path, BinaryIO]:
    while True:
        tmp = target.with_name(temporary_name(target.name, secrets.token_hex(4)))
        with contextlib.suppress(FileExistsError):
            return tmp, create_new(tmp)


@contextlib.contextmanager
def atomic_files() -> Iterator[NewFile]:
    """Write files all or none. In the block, ``new(path, overwrite=False)`` gives a new
    temporary file beside ``path``, open for writing (it may be closed early). When the block
    succeeds they are renamed onto their paths in the order they were made; when it fails, or a
    rename does, the temporaries and the files already renamed are removed (nothing is
    restored). An existing path is replaced only with ``overwrite``, and only when it is a
    regular file. An :class:`OSError` of the writing (a full disk, which names no file) becomes
    an :class:`MRSRError` naming the file being written.
    """
    made: list[tuple[Path, Path, BinaryIO]] = []
    published: list[Path] = []
    current = None

    def new(path: str | os.PathLike, overwrite: bool = False) -> BinaryIO:
        nonlocal current
        target = Path(path)
        if check_regular(target) and not overwrite:
            raise MRSRError(f"{one_line(target)}: already exists; pass --overwrite to replace it")
        try:
            tmp, stream = _temporary(target)
        except OSError as exc:
            raise MRSRError(f"{one_line(target)}: cannot be created ({exc.strerror})") from exc
        made.append((target, tmp, stream))
        current = target
        return stream

    try:
        try:
            yield new
        except OSError as exc:
            if exc.filename is not None or current is None:
                raise  # not the writing: a file read meanwhile names itself
            raise write_error(current, exc) from exc
        for target, _, stream in made:  # what is still buffered may not fit: all first
            _named(target, stream.close)
        for target, tmp, _ in made:
            _named(target, os.replace, tmp, target)
            published.append(target)
    except BaseException:
        for target, tmp, stream in made:
            with contextlib.suppress(OSError):
                stream.close()
            with contextlib.suppress(OSError):
                (target if target in published else tmp).unlink(missing_ok=True)
        raise


def write_error(target: str | os.PathLike, exc: OSError) -> MRSRError:
    """The error of writing ``target`` (``exc`` may name no file, as a full disk does)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return MRSRError(f"{one_line(target)}: cannot be written ({reason})")


def _named(target: Path, action: Callable, *args: object) -> None:
    try:
        action(*args)
    except OSError as exc:
        raise write_error(target, exc) from exc


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = False) -> Iterator[BinaryIO]:
    """A new temporary file beside ``path``, renamed onto it when the block succeeds and
    removed when it fails (:func:`atomic_files` for one file)."""
    with atomic_files() as new:
        yield new(path, overwrite)


def open_log(path: str | os.PathLike, keep: bool) -> BinaryIO:
    """A log at ``path`` open for appending: a new file, holding the old one's content when
    ``keep``, renamed onto it (the old file is never opened for writing)."""
    target = Path(path)
    old = read_regular(target) if check_regular(target) and keep else b""
    try:
        tmp, stream = _temporary(target)
    except OSError as exc:
        raise write_error(target, exc) from exc
    try:
        _named(target, stream.write, old)
        _named(target, stream.flush)
        _named(target, os.replace, tmp, target)
    except BaseException:
        stream.close()
        tmp.unlink(missing_ok=True)
        raise
    return stream


def remove_stale_temporaries(
    path: str | os.PathLike, keep: Callable[[Path], bool] = lambda p: False
) -> None:
    """Delete temporaries that a killed writer left beside ``path`` (not ``keep``, not
    folders; a link is removed, never followed)."""
    target = Path(path)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            if not keep(stale) and not stat.S_ISDIR(os.lstat(stale).st_mode):
                stale.unlink()


@contextlib.contextmanager
def new_folder(path: str | os.PathLike) -> Iterator[Path]:
    """The folder ``path``, created (with missing parents) for the block unless it exists;
    what this made is removed again if the block fails while it is still empty."""
    folder = Path(path)
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
    try:
        yield Path(path)
    except BaseException:
        with contextlib.suppress(OSError):  # stops at the first that is not empty
            for made in missing:
                made.rmdir()
        raise
