# -*- test-case-name: tests.test_files -*-
"""
Writing a file so that nobody ever reads half of it: the mode file, the
config, Claude Code's settings, unit files, breaker state.
"""

from __future__ import annotations

import os
import stat
import tempfile


def replaceFile(
    path: str, content: bytes, mode: int = 0o600, keepExistingMode: bool = False
) -> None:
    """
    Replace C{path} with C{content}: written to a temporary file beside it,
    flushed to disk, then renamed over it.  A reader (the daemon's poller,
    Claude Code) sees the old content or the new, never a truncated file,
    and a crash leaves the old one.

    @param mode: The new file's permissions.
    @param keepExistingMode: Keep the permissions of the file being
        replaced instead, when there is one.
    @raise OSError: If it cannot be written; C{path} is then untouched.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if keepExistingMode:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            pass
    descriptor, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
