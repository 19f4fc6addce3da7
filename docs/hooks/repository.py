"""MkDocs hook: the site holds the repository's files outside ``docs/`` that the docs link to.

The Markdown under ``docs/`` links to files beside the code (``../pipelines/README.md``,
``../mrsr/data/README.md``, ``../examples/clinical_evaluation.ipynb``) so that every link works on
GitHub. MkDocs only knows ``docs/``: this hook adds each such file, and each one that ``nav`` names
by its path in the repository (the model cards ``mrsr/data/weights/*.md``), to the site at that
path, and rewrites relative links between pages to where their targets land in the site. A page
under ``docs/`` lands at its path below ``docs/``, README.md on the home page ``docs/index.md``,
any other file at its path in the repository. It also reads a pipe escaped in a code span of a
table row (`` `a\\|b` ``) as GitHub does.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[2]
PAGES = (".md", ".ipynb")
# Links outside code: fenced blocks and code spans are matched first and kept as they are.
LINK = re.compile(r"(?ms)(^```.*?^```|`[^`\n]*`)|(!?\[[^\]]*\]\()([^)\s]+)(\))")

# GitHub needs `a\|b` for a pipe in a code span of a table row; Python-Markdown keeps the backslash
# there, and splits no cell at a pipe between backticks anyway.
TABLE_ROW = re.compile(r"(?m)^\|.*$")
CODE_SPAN = re.compile(r"`[^`\n]*`")

log = logging.getLogger("mkdocs.hooks.repository")


def _docs(config) -> Path:
    return Path(config["docs_dir"]).resolve()


def _site_path(target: Path, docs: Path) -> str | None:
    """Where the repository file ``target`` lands in the site; None outside the repository."""
    if target.is_relative_to(docs):
        return target.relative_to(docs).as_posix()
    if target == ROOT / "README.md":  # the site's home page plays its part
        return "index.md"
    if target.is_relative_to(ROOT):
        return target.relative_to(ROOT).as_posix()
    return None


def _targets(source: Path) -> set[Path]:
    """Repository files that the relative links of the page ``source`` point to."""
    if source.suffix != ".md":
        return set()
    found = set()
    for match in LINK.finditer(source.read_text("utf-8")):
        link = match.group(3)
        if link and not re.match(r"[a-z]+:", link) and not link.startswith("#"):
            target = (source.parent / link.partition("#")[0]).resolve()
            if target.is_file():
                found.add(target)
    return found


def _nav_paths(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_paths(value)]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_paths(item)]
    return []


@event_priority(100)  # before mkdocs-jupyter looks for notebooks among the files
def on_files(files: Files, config) -> Files:
    docs = _docs(config)
    in_nav = {p for p in _nav_paths(config["nav"] or []) if not (docs / p).exists()}
    todo = [Path(f.abs_src_path) for f in files if f.abs_src_path and f.src_uri.endswith(".md")]
    todo += [ROOT / p for p in in_nav if (ROOT / p).is_file()]
    seen: set[Path] = set()
    while todo:
        source = todo.pop()
        uri = _site_path(source, docs)
        if source in seen or uri is None:
            continue
        seen.add(source)
        if not source.is_relative_to(docs):
            if files.get_file_from_path(uri):  # README.md: index.md
                continue
            added = File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"])
            if source.suffix in PAGES and uri not in in_nav:
                added.inclusion = InclusionLevel.NOT_IN_NAV
            files.append(added)
        todo.extend(_targets(source))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Relative links of the page, from its place in the repository to their place in the site."""
    if not page.file.src_uri.endswith(".md"):
        return markdown
    source = Path(page.file.abs_src_path)
    docs = _docs(config)
    here = posixpath.dirname(page.file.src_uri)

    def relink(match: re.Match) -> str:
        link = match.group(3)
        if not link or re.match(r"[a-z]+:", link) or link.startswith("#"):
            return match.group(0)
        path, hash_, anchor = link.partition("#")
        target = (source.parent / path).resolve()
        uri = _site_path(target, docs)
        if uri is None:
            log.warning(f"{page.file.src_uri}: link to {link}, outside the site: link a docs page")
            return match.group(0)
        new = posixpath.relpath(uri, here) + hash_ + anchor
        return f"{match.group(2)}{new}{match.group(4)}"

    return TABLE_ROW.sub(_unescape_pipes, LINK.sub(relink, markdown))


def _unescape_pipes(row: re.Match) -> str:
    return CODE_SPAN.sub(lambda code: code.group(0).replace("\\|", "|"), row.group(0))
