"""Griffe extension: Sphinx roles in mrsr's docstrings become links in the API reference.

mrsr's docstrings name objects the way ``help()`` readers and Sphinx know them
(``:func:`mrsr.io.load_volume```, ``:class:`~mrsr.errors.MRSRError```). mkdocstrings does not
read roles, so this rewrites each into an optional cross-reference: a link where the reference
documents the object, plain code where it does not. A bare name is looked up in the module of the
docstring.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|data|meth|mod|attr|exc|obj):`(~?)([\w.]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is None:
            return
        module = obj.module.path

        def link(match: re.Match) -> str:
            short, name = match.groups()
            identifier = name if "." in name else f"{module}.{name}"
            title = name.rsplit(".", 1)[-1] if short else name
            return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

        obj.docstring.value = ROLE.sub(link, obj.docstring.value)
