"""The escapes of names in missing.txt's tab-separated lines, readable without pandas (`status` reads them)."""

from __future__ import annotations

import re

ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}  # backslash first, so escapes are not escaped again
_ESCAPED = re.compile(r"\\([\\tnr])")
_PLAIN = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def unescape(text: str) -> str:
    """The name a field of missing.txt stands for."""
    return _ESCAPED.sub(lambda match: _PLAIN[match.group(1)], text)
