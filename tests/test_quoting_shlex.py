"""``quoting.split`` is a faster ``shlex.split``: same words, same errors."""

from __future__ import annotations

import shlex

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_agenda import quoting

shell_text = st.text(alphabet="ab é'\"\\\t=\u00a0", max_size=30)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(shell_text)
def test_split_agrees_with_shlex(line):
    try:
        expected = shlex.split(line, comments=False, posix=True)
    except ValueError as e:
        expected = e.__class__
    try:
        got = quoting.split(line)
    except ValueError as e:
        got = e.__class__
    assert got == expected
