# -*- test-case-name: tests.test_modes -*-
"""
The mode file: one mode name, written by hand or by C{ccrouter mode}.  Pure.
"""

from __future__ import annotations

import difflib
import re

from attrs import frozen

from ccrouter.config import Config

#: Longer than any mode name could be: the file is not a mode file.
MAX_MODE_FILE_BYTES = 256
_ECHOED_NAME = 32
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


@frozen
class ModeReading:
    """
    What a mode file says.

    @ivar mode: The mode it names, or L{None} when it names none that can be
        used (see C{problem}) or does not exist.
    @ivar problem: Why its content cannot be used, for logs and C{/health}.
    """

    mode: str | None
    problem: str | None = None


def readModeFile(content: bytes | None, config: Config) -> ModeReading:
    """
    Check a mode file's content against the modes of C{config}.

    @param content: The file's bytes, or L{None} when it does not exist.
    """
    if content is None:
        return ModeReading(None)
    if len(content) > MAX_MODE_FILE_BYTES:
        return ModeReading(
            None,
            f"is {len(content)} bytes long; it should hold one mode name",
        )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return ModeReading(None, "is not UTF-8 text; it should hold one mode name")
    words = text.split()
    names = [mode.name for mode in config.modes]
    if not words:
        return ModeReading(None, "is empty; it should hold one mode name")
    if len(words) > 1:
        return ModeReading(
            None, f"holds {len(words)} words; it should hold one mode name"
        )
    [name] = words
    if config.mode(name) is None:
        if not name.isprintable():
            return ModeReading(None, "holds control characters, not a mode name")
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        # Something long that is not a mode name may be a key pasted into
        # the wrong file: it is not repeated.
        shown = (
            repr(name)
            if len(name) <= _ECHOED_NAME and _NAME.match(name)
            else f"of {len(name)} characters"
        )
        return ModeReading(
            None, f"names unknown mode {shown}; {hint}modes: {', '.join(names)}"
        )
    return ModeReading(name)
