"""Text from outside, shown in a terminal: every control character escaped, nothing markup."""

from __future__ import annotations

import io

from rich.console import Console

from bridge.terminal import cell, printable, printable_lines


def test_printable_escapes_every_control_character_and_keeps_the_rest() -> None:
    assert printable("order.created — ünïcode") == "order.created — ünïcode"
    assert printable("\x1b]0;t\x07\x1b[2J") == "\\x1b]0;t\\x07\\x1b[2J"
    assert printable("a\r\nb\tc\x00\x7f\x9b") == "a\\r\\nb\\tc\\x00\\x7f\\x9b"
    assert printable("\u202eevil\u2066\u2028") == "\\u202eevil\\u2066\\u2028"
    assert printable(42) == "42"


def test_a_cell_is_never_read_as_markup() -> None:
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=True).print(cell("[bold]x[/bold] \x1b[2J"))
    shown = out.getvalue()
    assert "[bold]x[/bold] \\x1b[2J" in shown and "\x1b[2J" not in shown


def test_printable_lines_keeps_the_line_breaks_of_a_message() -> None:
    message = "c.yaml:1: a: bad \x1b[2J\nc.yaml:2: b: bad\r"
    assert printable_lines(message) == "c.yaml:1: a: bad \\x1b[2J\nc.yaml:2: b: bad\\r"
