"""Make untrusted text safe to show: a server's reason phrase, a key id from a `.sig` file.

Such text may carry terminal escape sequences (ANSI CSI/OSC, 8-bit C1 controls), bidi overrides
or line breaks that forge log lines. `printable` escapes every control, format and separator
character (`\\x1b`, `\\u202e`, `\\n`) and caps the length, so what reaches a terminal or a log
is one inert line.
"""

from __future__ import annotations

import unicodedata

DEFAULT_LIMIT = 200


def _escaped(char: str) -> str:
    # Cc: C0/C1 controls (ESC, CSI); Cf: format (bidi overrides); Cs/Co/Cn: surrogates, private,
    # unassigned; Zl/Zp: line and paragraph separators. Plain spaces stay.
    category = unicodedata.category(char)
    if category[0] != "C" and category not in ("Zl", "Zp"):
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """`text` with control and format characters escaped, cut to about `limit` characters."""
    shown = "".join(_escaped(char) for char in text[:limit])
    if len(text) > limit:
        shown += f"... ({len(text) - limit} more characters)"
    return shown
