"""The one error type for problems a user can fix (bad file, bad option, existing output)."""

from __future__ import annotations

import os
import reprlib

__all__ = ["MRSRError", "one_line", "shown"]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 6
_REPR.maxlevel = 2
MAX_MESSAGE = 600


class MRSRError(ValueError):
    """A user-facing problem; the message names the file or option and says what to do.

    A :class:`ValueError`, so that ``except ValueError`` code keeps working. The command line
    prints it on one line and exits with code 2; any other exception (a bare ``ValueError``
    included) is an internal bug, shown as ``unexpected ...``.
    """


def shown(value: object) -> str:
    """A value as echoed in a message: its repr, shortened (a config may hold anything)."""
    return _REPR.repr(value)


def one_line(text: str | os.PathLike) -> str:
    """``text`` with control characters escaped and its length bounded: one terminal line.

    >>> one_line("a\\nb.nii")
    'a\\\\nb.nii'
    """
    text = os.fspath(text)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 20] + " ... " + text[-15:]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
