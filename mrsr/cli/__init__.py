"""The ``mrsr`` console command: one sub-command per job (README.md, "Command line").

Each command lives in its own module (its parser and its function); this one builds the
parser and turns every failure into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mrsr import __version__
from mrsr.cli import bids, bundle, degrade, evaluate, throughplane, train, upscale
from mrsr.cli.common import message
from mrsr.errors import one_line
from mrsr.files import write_error
from mrsr.progress import NORMAL, QUIET, VERBOSE, set_level

__all__ = ["build_parser", "main"]


class _Named:
    """``sys.stdout`` whose failures name it (a full disk behind ``> file`` names no file)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def write(self, text: str) -> int:
        return self._named(self.stream.write, text)

    def flush(self) -> None:
        self._named(self.stream.flush)

    @staticmethod
    def _named(action, *args):
        try:
            return action(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_error("standard output", exc) from exc


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (``mrsr: error: ...``, exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"mrsr: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mrsr", description="Super-resolution of MR volumes, NIfTI in, NIfTI out."
    )
    parser.add_argument("--version", action="version", version=f"mrsr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    degrade.add_degrade(sub)
    upscale.add_upscale(sub)
    bids.add_bids(sub)
    evaluate.add_demo(sub)
    evaluate.add_evaluate(sub)
    train.add_train(sub)
    train.add_models(sub)
    throughplane.add_throughplane(sub)
    bundle.add_export_bundle(sub)
    for p in (parser, *sub.choices.values()):  # before or after the command name
        default = argparse.SUPPRESS if p is not parser else NORMAL
        loud = p.add_mutually_exclusive_group()
        loud.add_argument(
            "-q",
            "--quiet",
            dest="level",
            action="store_const",
            const=QUIET,
            default=default,
            help="errors and warnings only: no progress, no notes",
        )
        loud.add_argument(
            "-v",
            "--verbose",
            dest="level",
            action="store_const",
            const=VERBOSE,
            default=default,
            help="more detail",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 terminal must not crash a table
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["mrsr", *(sys.argv[1:] if argv is None else argv)]  # as typed
    set_level(args.level)
    stdout, sys.stdout = sys.stdout, _Named(sys.stdout)
    try:
        args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("mrsr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mrsr evaluate ... | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure ends in one line, never a traceback
        if args.debug:
            raise
        print(f"mrsr: error: {message(exc)}", file=sys.stderr)
        return 2
    finally:
        if isinstance(sys.stdout, _Named):
            sys.stdout = stdout
    return 0
