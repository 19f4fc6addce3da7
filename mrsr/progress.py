"""Progress and notes on stderr: a tqdm bar on a terminal, plain lines in a log, none when quiet.

The level is set once (``--quiet`` / ``--verbose`` on the command line, :func:`set_level` in
Python); ``TQDM_DISABLE=1`` turns the bars off as tqdm users expect. When stderr is not a
terminal a bar prints a plain line at 0, every tenth and at the end, never a carriage return.
In a notebook the widget bar is used only when ``ipywidgets`` is installed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from mrsr.errors import one_line

__all__ = ["QUIET", "VERBOSE", "bar", "note", "set_level", "warn"]

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL
_warned: set[str] = set()


def set_level(level: int) -> None:
    """``QUIET`` (errors only), ``NORMAL`` or ``VERBOSE``."""
    global _level
    _level = level


def _line(text: str) -> None:
    """One whole line on stderr, in one write: lines from the I/O threads never interleave."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def note(message: str, level: int = NORMAL) -> None:
    """Print ``message`` on stderr when the level allows it."""
    if _level >= level:
        _line(message)


def warn(message: str) -> None:
    """Print ``mrsr: warning: message`` on stderr at every level, once per process."""
    if message not in _warned:
        _warned.add(message)
        _line(f"mrsr: warning: {one_line(message)}")


class _Lines:
    """A tqdm-like counter that prints whole lines (for logs and pipes)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0) -> None:
        self.total, self.desc, self.unit = max(total, 0), desc, unit
        self.n, self._shown = initial, -1
        self._show()

    def _show(self) -> None:
        tenth = 10 * self.n // self.total if self.total else 10
        if tenth != self._shown:
            self._shown = tenth
            _line(f"{self.desc}: {self.n}/{self.total} {self.unit}")

    def update(self, n: int = 1) -> None:
        self.n += n
        self._show()

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        if self.n != self.total and self._shown != 10:
            _line(f"{self.desc}: {self.n}/{self.total} {self.unit}")


def _tqdm_class() -> Any:
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401 - only its presence matters
        except ImportError:
            pass
        else:
            from tqdm.notebook import tqdm

            return tqdm
    from tqdm.std import tqdm

    return tqdm


def bar(total: int, desc: str, unit: str = "it", enabled: bool = True, **kwargs: Any) -> Any:
    """A progress bar over ``total`` steps (``update``, ``set_postfix``, ``close``)."""
    off = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    if not enabled or off or _level == QUIET:
        from tqdm.std import tqdm

        return tqdm(total=total, disable=True)
    if "ipykernel" not in sys.modules and not sys.stderr.isatty():
        return _Lines(total, desc, unit, kwargs.get("initial", 0))
    return _tqdm_class()(total=total, desc=desc, unit=unit, file=sys.stderr, **kwargs)
