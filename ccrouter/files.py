# -*- test-case-name: tests.test_files -*-
"""
Writing a file so that nobody ever reads half of it: the mode file, the
config, Claude Code's settings, unit files, breaker state; and making the
directories ccrouter keeps its own files in private (0700), whatever the
umask.
"""

from __future__ import annotations

import os
import stat
import tempfile

#: What ccrouter's own files and directories are: private to their owner.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIRECTORY_MODE = 0o700


def makePrivateDirectories(directory: str) -> None:
    """
    Create C{directory} and every missing parent as 0700.  Directories that
    already exist are left as they are: they may be the user's own
    (C{~/.config}), shared on purpose.

    C{os.makedirs} gives the missing parents the umask's default mode
    (0755 under C{umask 022}) and applies the umask to the last one too;
    this applies 0700 to each one it creates.

    @raise OSError: If one cannot be created.
    """
    directory = os.path.abspath(directory)
    missing: list[str] = []
    while not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, PRIVATE_DIRECTORY_MODE)
        except FileExistsError:
            # Created meanwhile by someone else (another ccrouter command):
            # theirs, and as they made it.
            if not os.path.isdir(path):
                raise
            continue
        # mkdir applies the umask, and one that took the owner's own bits
        # would leave a directory ccrouter cannot use.
        os.chmod(path, PRIVATE_DIRECTORY_MODE)


def replaceFile(
    path: str, content: bytes, mode: int = 0o600, keepExistingMode: bool = False
) -> None:
    """
    Replace C{path} with C{content}: written to a temporary file beside it,
    flushed to disk, then renamed over it.  A reader (the daemon's poller,
    Claude Code) sees the old content or the new, never a truncated file,
    and a crash leaves the old one.  Missing directories are created 0700.

    @param mode: The new file's permissions (applied whatever the umask).
    @param keepExistingMode: Keep the permissions of the file being
        replaced instead, when there is one.
    @raise OSError: If it cannot be written; C{path} is then untouched.
    """
    directory = os.path.dirname(path) or "."
    makePrivateDirectories(directory)
    if keepExistingMode:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            pass
    # mkstemp creates the file 0600 whatever the umask: never readable by
    # others, not even for the moment before the fchmod.
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


def writePrivateFile(path: str, content: bytes) -> None:
    """
    Replace C{path} with C{content} as a 0600 file, atomically (see
    L{replaceFile}), creating its missing directories 0700: for anything
    that holds or reveals a secret (a token, a config, breaker state, the
    daemon's address).  A file already there gets 0600 too.

    @raise OSError: If it cannot be written; C{path} is then untouched.
    """
    replaceFile(path, content, mode=PRIVATE_FILE_MODE)
