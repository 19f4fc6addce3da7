"""Griffe extension: mrsr's docstrings and comments as the API reference shows them.

- Sphinx roles become links. mrsr's docstrings name objects the way ``help()`` readers and Sphinx
  know them (``:func:`mrsr.io.load_volume```, ``:class:`~mrsr.errors.MRSRError```); mkdocstrings
  does not read roles, so each becomes an optional cross-reference: a link where the reference
  documents the object, plain code where it does not. A bare name is looked up in the module of
  the docstring.
- Doctest examples (``>>>`` lines and their output, up to a blank line) become Python console
  code blocks; Markdown would read ``>>>`` as nested quotes.
- A module's constants are documented by their comment, the one that ends their first line or
  the block just above them (``FORMATS = _formats()  # for messages: what mrsr reads``), when
  they have no docstring: that comment is their docstring in the reference.
"""

from __future__ import annotations

import io
import re
import tokenize
from functools import cache

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|data|meth|mod|attr|exc|obj):`(~?)([\w.]+)`")
# A doctest: from a line starting with >>> (after its indentation) to the next blank line.
DOCTEST = re.compile(r"(?m)^([ \t]*)>>>.*(?:\n(?![ \t]*$).*)*")


@cache
def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text, whether code comes before it on that line)."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            code_before = bool(token.line[: token.start[1]].strip())
            found[token.start[0]] = (token.string.lstrip("#").strip(), code_before)
    return found


def _comment(attribute: griffe.Attribute) -> str:
    comments = _comments("\n".join(attribute.parent.lines))
    text, code_before = comments.get(attribute.lineno, ("", False))
    if code_before:
        return text
    above = []
    line = attribute.lineno - 1
    while line in comments and not comments[line][1]:
        above.insert(0, comments[line][0])
        line -= 1
    return " ".join(above)


class Docstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is None and obj.is_attribute and obj.parent.is_module:
            text = _comment(obj)
            if text:
                obj.docstring = griffe.Docstring(text[0].upper() + text[1:], parent=obj)
        if obj.docstring is None:
            return
        module = obj.module.path

        def link(match: re.Match) -> str:
            short, name = match.groups()
            identifier = name if "." in name else f"{module}.{name}"
            title = name.rsplit(".", 1)[-1] if short else name
            return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

        obj.docstring.value = DOCTEST.sub(_fenced, ROLE.sub(link, obj.docstring.value))


def _fenced(doctest: re.Match) -> str:
    indent = doctest.group(1)
    return f"{indent}```pycon\n{doctest.group(0)}\n{indent}```"
