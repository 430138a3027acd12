"""Quoting of reply values so that ``shlex.split`` gives them back exactly.

Plain values stay bare (``Maria``, ``+5511912345678``); anything with
spaces, quotes or backslashes goes in double quotes with ``"`` and ``\\``
escaped, which reads naturally in a terminal: ``"Maria da Silva"``,
``"João d'Ávila"``.
"""

from __future__ import annotations

import shlex

_SPECIAL = frozenset("\"'\\")


def quote(value: str) -> str:
    if value and not any(c.isspace() or c in _SPECIAL for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def join(values) -> str:
    return " ".join(quote(v) for v in values)


def split(line: str) -> list[str]:
    """Split a request like a POSIX shell; ValueError on unbalanced quotes."""
    return shlex.split(line, comments=False, posix=True)
