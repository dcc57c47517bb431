# -*- test-case-name: tests.test_local_token -*-
"""
The local token's file (C{server.token_file}): a new token, the file
created for it, and the file read for the config loader.

The token keeps other local users, and pages in a browser, from using the
proxy, so a file anyone else can read (or write) defeats it: such a file is
refused, as C{ssh} refuses a private key others can read.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile

from ccrouter.config import MAX_TOKEN_FILE_BYTES
from ccrouter.files import makePrivateDirectories

#: 32 random bytes: 256 bits, as reliability.md (d) asks.
TOKEN_BYTES = 32


def newToken() -> str:
    """
    A new random token: 43 characters of URL-safe base64.
    """
    return secrets.token_urlsafe(TOKEN_BYTES)


def readTokenFile(path: str) -> bytes:
    """
    The start of a token file (at most C{MAX_TOKEN_FILE_BYTES + 1} bytes,
    so an oversized one can be told apart), for
    L{ccrouter.config.parseConfig}'s C{readFile}.

    @raise OSError: If it cannot be read.
    @raise ValueError: If it is not a regular file, or others may read or
        write it.
    """
    # Non-blocking, so that a FIFO put there cannot stall the reactor.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise ValueError(
                f"can be read or written by others (mode {mode:04o});"
                f" run 'chmod 600 {path}'"
            )
        data = b""
        while len(data) <= MAX_TOKEN_FILE_BYTES:
            chunk = os.read(descriptor, MAX_TOKEN_FILE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        os.close(descriptor)


def createTokenFile(path: str) -> bool:
    """
    Write a new token to C{path}, a 0600 file (its directory created 0700
    if missing), unless there is a file there already.  The file appears
    whole or not at all: a reader never sees it empty.

    @return: Whether it was created.
    @raise OSError: If it cannot be written.
    """
    directory = os.path.dirname(path) or "."
    makePrivateDirectories(directory)
    if os.path.lexists(path):
        return False
    content = (newToken() + "\n").encode("ascii")
    # mkstemp makes the file 0600 whatever the umask.
    descriptor, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600)
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            # A hard link never replaces an existing file, unlike a rename.
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _createExclusive(path, content)
        return True
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _createExclusive(path: str, content: bytes) -> bool:
    """
    For file systems without hard links: exclusive, if not atomic.
    """
    try:
        descriptor = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as stream:
        os.fchmod(stream.fileno(), 0o600)
        stream.write(content)
        stream.flush()
        os.fsync(stream.fileno())
    return True
