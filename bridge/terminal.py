"""How text from outside is shown in a terminal: every control character escaped.

Much of what the CLI prints came from elsewhere: an event's type, subject, id and data from
a webhook's sender or a polled upstream, a target's answer and error, a daemon's reply.
Printed raw, `ESC ] ... BEL` (OSC) could retitle the window, write the clipboard or hide a
link, `ESC [ 2 J` clear the screen, `\\r` overwrite what came before on the line, and the
bidirectional overrides reorder what is read. So every human-readable output passes such
text through `printable`, which shows each of them as an escape (`\\x1b`, `\\r`, `\\u202e`),
and a rich table gets it as a `cell`, which also keeps rich from reading `[...]` as markup.
`--json` needs none of this: JSON escapes the C0 controls itself.

Imports nothing of the bridge; rich only when a cell is made.
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls and DEL, the bidirectional marks, embeddings, overrides and isolates,
# and the Unicode line and paragraph separators (a line break to a terminal).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object) -> str:
    """`text` (made a str) with every control character shown as an escape: safe to print."""
    return _CONTROL.sub(_escape, str(text))


def printable_lines(text: object) -> str:
    """`text` whose line breaks are the caller's own (a message of several lines, one
    mistake each): each line printable, the breaks kept."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def cell(text: object) -> Any:
    """`text` as a rich table cell: printable, and never read as rich markup."""
    from rich.text import Text

    return Text(printable(text))
