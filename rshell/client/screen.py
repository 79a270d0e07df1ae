"""Text from elsewhere, made safe to show on a terminal: ``visible``, the one rule.

A server (or a file, or a name the user was handed) chooses the text of an
error reason, an Error message, the prompt's user and directory: written raw,
an ESC or a C1 CSI in it would retitle the window, clear the screen or draw
a fake prompt.  Everything rshell itself prints that is not a command's own
output goes through ``visible``; the command's stdout and stderr bytes never
do (they are the user's data, byte-transparent, as with ssh).

The library returns the server's text unchanged (``Result.error``,
``Connection.cwd``, exception messages); the escaping happens where it is
printed.  Must not import anything above layer 0.
"""

from __future__ import annotations

#: Categories that move the cursor, reorder or hide text, or stand for bytes
#: that were not text: controls (C0, DEL, C1), format characters (bidi
#: overrides and isolates, zero-width spaces), surrogates (undecodable bytes
#: kept by ``surrogateescape``), line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Format characters that join letters and emoji and move nothing: kept.
_JOINERS = frozenset("\u200c\u200d")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible(text: str) -> str:
    """``text`` with every control made visible, as a Python literal spells it.

    ``\\n``, ``\\t``, ``\\r``; ``\\xNN`` for the other C0 controls, DEL and C1
    controls (ESC is ``\\x1b``, CSI ``\\x9b``) and for an undecodable byte
    (a ``surrogateescape`` surrogate); ``\\uNNNN`` for format characters and
    separators (U+202E is ``\\u202e``).  Newline and tab too: whatever we
    print is one line, or a field inside one.  A backslash stays as it is
    (the form is for the eye, as OpenSSH's for banners; it is not reversible).
    """
    if text.isprintable():  # the common case: no control at all, no copy
        return text
    return "".join(_shown(ch) for ch in text)


def _shown(ch: str) -> str:
    if ch.isprintable() or ch in _JOINERS:
        return ch
    import unicodedata  # only once there is something to look at

    if unicodedata.category(ch) not in _HIDDEN:
        return ch  # no-break spaces, private use, unassigned: drawn, never obeyed
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
