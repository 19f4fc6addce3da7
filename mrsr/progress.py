"""Progress and notes on stderr: a tqdm bar on a terminal, plain lines in a log, none when quiet.

The level is set once (``--quiet`` / ``--verbose`` on the command line, :func:`set_level` in
Python); ``TQDM_DISABLE=1`` turns the bars off as tqdm users expect. When stderr is not a
terminal a bar prints a plain line at 0, every tenth and at the end, never a carriage return.
When stderr is not a terminal or the bars are off, a long stage also prints a status line
whenever :data:`INTERVAL` seconds pass without one, even while one step takes longer::

    training: 120/1000 step, 00:31 elapsed, about 03:47 left, loss 0.0213

In a notebook the widget bar is used only when ``ipywidgets`` is installed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from tqdm.std import tqdm

from mrsr.errors import one_line

__all__ = ["QUIET", "VERBOSE", "bar", "note", "set_level", "warn"]

QUIET, NORMAL, VERBOSE = 0, 1, 2
# Seconds at most between two lines of a stage in a log or with the bars off.
INTERVAL = float(os.environ.get("MRSR_PROGRESS_INTERVAL", "30"))
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
    """A tqdm-like counter that prints whole lines (for logs and pipes, and with the bars off).

    With ``milestones``, a line at 0, every tenth and at the end; in any case a status line
    (:meth:`status`) whenever :data:`INTERVAL` seconds pass without a line, from a thread while a
    step takes longer. Use it in a ``with`` block, or ``close`` it, to stop that thread.
    """

    def __init__(
        self, total: int, desc: str, unit: str, initial: int = 0, milestones: bool = True
    ) -> None:
        self.total, self.desc, self.unit = max(total, 0), desc, unit
        self.n = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.milestones, self._shown = milestones, -1
        self._start = self._last = time.monotonic()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._show()
        self._beat = threading.Thread(target=self._beating, daemon=True)
        self._beat.start()

    def _print(self, text: str) -> None:
        self._last = time.monotonic()
        _line(text)

    def _show(self) -> None:
        tenth = 10 * self.n // self.total if self.total else 10
        if self.milestones and tenth != self._shown:
            self._shown = tenth
            self._print(f"{self.desc}: {self.n}/{self.total} {self.unit}")

    def status(self) -> str:
        """``desc: n/total unit, elapsed, about remaining left`` and the postfix (a loss)."""
        elapsed = time.monotonic() - self._start
        done = self.n - self.initial
        left = tqdm.format_interval(elapsed * (self.total - self.n) / done) if done > 0 else "?"
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        return (
            f"{self.desc}: {self.n}/{self.total} {self.unit}, "
            f"{tqdm.format_interval(elapsed)} elapsed, about {left} left{extra}"
        )

    def _due(self) -> None:
        with self._lock:
            if time.monotonic() - self._last >= INTERVAL:
                self._print(self.status())

    def _beating(self) -> None:
        while not self._stop.wait(max(self._last + INTERVAL - time.monotonic(), 0.01)):
            self._due()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._show()
        self._due()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        self._stop.set()
        self._beat.join()
        if self.milestones and self.n != self.total and self._shown != 10:
            self._print(f"{self.desc}: {self.n}/{self.total} {self.unit}")

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel running a notebook (not merely one that has
    imported ipykernel, as a test runner that executes notebooks has)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _tqdm_class() -> Any:
    if _in_notebook():
        try:
            import ipywidgets  # noqa: F401 - only its presence matters
        except ImportError:
            pass
        else:
            from tqdm.notebook import tqdm as widget_bar

            return widget_bar
    return tqdm


def bar(total: int, desc: str, unit: str = "it", enabled: bool = True, **kwargs: Any) -> Any:
    """A progress bar over ``total`` steps (``update``, ``set_postfix``, ``close``), to use as
    a context manager: a tqdm bar on a terminal, else lines (:class:`_Lines`; with
    ``TQDM_DISABLE=1`` only the status lines), nothing when not ``enabled`` or quiet."""
    if not enabled or _level == QUIET:
        return tqdm(total=total, disable=True)
    off = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    if off or (not _in_notebook() and not sys.stderr.isatty()):
        return _Lines(total, desc, unit, kwargs.get("initial", 0), milestones=not off)
    return _tqdm_class()(total=total, desc=desc, unit=unit, file=sys.stderr, **kwargs)
