"""The documentation holds together: every relative link resolves, every mrsr name it cites exists,
README's quick start is the two commands users (and CI) run, its Python examples compile, every
example in a docstring runs as written, the site lists every page and every command, and it builds
with warnings as errors."""

import argparse
import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mrsr
from mrsr.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("docs", "mrsr", "pipelines", "benchmarks", "examples", "tests")
PAGES = sorted([*ROOT.glob("*.md"), *(p for d in SOURCES for p in (ROOT / d).rglob("*.md"))])
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CARDS = sorted((ROOT / "mrsr" / "data" / "weights").glob("*.md"))
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+\s+(.*)$", FENCE.sub("", page.read_text("utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """Links of ``page`` (outside code) to a missing file, or to a missing heading of a page."""
    text = CODE.sub("", FENCE.sub("", page.read_text("utf-8")))
    broken = []
    for link in LINK.findall(text):
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or (
            anchor and target.suffix == ".md" and anchor not in anchors(target)
        ):
            broken.append(link)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links {broken_links(page)}"


def test_the_link_checker_sees_a_broken_link(tmp_path):
    (tmp_path / "b.md").write_text("# Any grid: `--like`\n\n## Same\n\n## Same\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md#any-grid---like) [ok](b.md#same-1) [ok](https://x.org/c.md) [ok](#top)\n"
        "[no file](c.md) [no anchor](b.md#grid) `[code](d.md)`\n\n# Top\n"
    )
    assert broken_links(page) == ["c.md", "b.md#grid"]


def resolves(name: str) -> bool:
    """Whether a dotted name like ``mrsr.io.load_volume`` is a module or an attribute of one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            found = getattr(found, attr, None)
        return found is not None
    return False


def test_every_mrsr_name_the_docs_cite_exists():
    """A name moved in the code is a broken link in the docs (``Pipeline.x``: mrsr.Pipeline)."""
    cited = {
        (page.name, name if name.startswith("mrsr") else f"mrsr.{name}")
        for page in DOCS
        for span in CODE.findall(page.read_text("utf-8"))
        for name in re.findall(r"\bmrsr(?:\.\w+)+|(?<![\w.])Pipeline(?:\.\w+)+", span)
    }
    assert ("api.md", "mrsr.Pipeline.fit") in cited
    assert resolves("mrsr.io.load_volume") and not resolves("mrsr.io.no_such_name")
    assert not [c for c in sorted(cited) if not resolves(c[1])]


def test_readme_quick_start_is_exactly_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", readme, re.S).group(1)
    assert block.splitlines() == [
        "pip install -e . && mrsr demo",
        'pip install -e ".[test]" && python -m pytest -q',
    ]


MODULES = ["mrsr", *(m.name for m in pkgutil.walk_packages(mrsr.__path__, "mrsr."))]


@pytest.mark.parametrize("name", [m for m in MODULES if m != "mrsr.__main__"])
def test_docstring_examples_run(name, capsys):
    failed, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failed == 0, capsys.readouterr().out


PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize(
    "page", [p for p in DOCS if PYTHON.search(p.read_text("utf-8"))], ids=lambda p: p.name
)
def test_python_examples_in_the_docs_compile(page):
    for block in PYTHON.findall(page.read_text("utf-8")):
        compile(block, str(page), "exec")


class _Tags(yaml.SafeLoader):
    """mkdocs.yml's YAML, its ``!!python/...`` tags read as plain values."""


_Tags.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def nav_paths(nav) -> list[str]:
    """The files a MkDocs ``nav`` lists, in order."""
    if isinstance(nav, str):
        return [nav]
    items = nav.values() if isinstance(nav, dict) else nav
    return [path for item in items for path in nav_paths(item)]


def left_out(nav) -> list[str]:
    """Pages of the site missing from ``nav`` (as its paths: docs/ pages below docs/, model cards
    at their path in the repository), then nav entries with no file."""
    listed = nav_paths(nav)
    pages = [p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")]
    pages += [p.relative_to(ROOT).as_posix() for p in CARDS]
    missing = [p for p in sorted(pages) if p not in listed]
    return missing + [
        p for p in listed if not ((ROOT / "docs" / p).is_file() or (ROOT / p).is_file())
    ]


def test_the_site_lists_every_page_and_model_card():
    nav = yaml.load((ROOT / "mkdocs.yml").read_text("utf-8"), Loader=_Tags)["nav"]
    assert left_out(nav) == []
    assert left_out([*nav, {"gone": "no_such_page.md"}]) == ["no_such_page.md"]
    assert left_out(nav[1:]) == [nav_paths(nav[0])[0]]


def commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def tabled(page: Path) -> list[str]:
    """The commands the first column of ``page``'s tables names (`mrsr NAME ...`)."""
    return re.findall(r"^\| `mrsr ([\w-]+)", page.read_text("utf-8"), re.M)


@pytest.mark.parametrize("page", ["README.md", "docs/commands.md"])
def test_the_command_tables_list_every_command(page):
    assert sorted(tabled(ROOT / page)) == sorted(commands())


def unrendered(site: Path) -> list[str]:
    """Names in the ``__all__`` of a module that the reference renders (``::: module``) that no
    reference page documents: under the module's name, or under the module that defines them."""
    html = "".join(p.read_text("utf-8") for p in (site / "reference").rglob("*.html"))
    missing = []
    for page in (ROOT / "docs" / "reference").glob("*.md"):
        for name in re.findall(r"^::: (\S+)$", page.read_text("utf-8"), re.M):
            module = importlib.import_module(name) if name != "mrsr.pipeline.Pipeline" else None
            for member in getattr(module, "__all__", []):
                home = getattr(getattr(module, member), "__module__", name)
                if f'id="{name}.{member}"' not in html and f'id="{home}.{member}"' not in html:
                    missing.append(f"{name}.{member}")
    return missing


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """`mkdocs build --strict`: no broken link or anchor, no page outside the nav, no docstring
    that mkdocstrings cannot read; the commands page holds every command's options, the
    reference every public name of its modules."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    page = (tmp_path / "commands" / "index.html").read_text("utf-8")
    for name, parser in commands().items():
        assert f'id="mrsr-{name}"' in page
        for action in parser._actions:
            assert all(option in page for option in action.option_strings), (name, action)
    assert "<code>mrsr degrade IN OUT --scale S [--method kspace|bicubic]" in page  # \| in the page
    training = (tmp_path / "training" / "index.html").read_text("utf-8")
    assert 'href="../pipelines/#distributed-training"' in training  # ../pipelines/README.md
    reference = (tmp_path / "reference" / "pipeline" / "index.html").read_text("utf-8")
    assert 'id="mrsr.pipeline.Pipeline.save_all"' in reference  # inherited methods too
    assert ":func:" not in reference and 'href="../throughplane/#mrsr.throughplane' in reference
    assert unrendered(tmp_path) == []
    degradations = (tmp_path / "reference" / "degradations" / "index.html").read_text("utf-8")
    assert "<blockquote>" not in degradations  # its doctest is code, not quotes
    assert '<span class="gp">&gt;&gt;&gt; </span><span class="n">DEGRADATIONS' in degradations
    notebook = (tmp_path / "examples" / "clinical_evaluation" / "index.html").read_text("utf-8")
    assert "Pipeline" in notebook
    for card in CARDS:
        assert (tmp_path / "mrsr/data/weights" / card.stem / "index.html").is_file()
