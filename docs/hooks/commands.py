"""MkDocs hook: the commands page shows every command's ``--help``, made from the parsers.

``docs/commands.md`` holds the marker below where the reference goes; the site puts there, for
``mrsr`` and each of its commands in the parser's order, a heading and its ``--help`` text, so the
page can never disagree with the command line.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- every command's --help, from the parsers -->"
WIDTH = "88"  # columns of the help text


def _help(parser: argparse.ArgumentParser) -> str:
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps to the terminal's width
    try:
        return parser.format_help()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def reference() -> str:
    """Markdown: a section per command with its one-line summary and its ``--help``."""
    from mrsr.cli import build_parser

    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help for a in commands._choices_actions}
    sections = [f"### `mrsr`\n\nThe options before a command.\n\n```text\n{_help(parser)}```\n"]
    for name, sub in commands.choices.items():
        sections.append(
            f"### `mrsr {name}`\n\n{summaries[name][0].upper()}{summaries[name][1:]}.\n\n"
            f"```text\n{_help(sub)}```\n"
        )
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, reference())
    return markdown
