# -*- test-case-name: tests.test_sendqueue -*-
"""
How much of what was written to a client connection the client has not yet
taken: the bytes the transport still holds plus the kernel's send queue.
A drop in this figure is the proof that a client holding a stream back is
still reading, however slowly.
"""

from __future__ import annotations

import fcntl
import struct
import termios


def unsentBytes(transport: object) -> int | None:
    """
    @param transport: A client connection's transport.

    @return: The bytes written to C{transport} that its peer has not taken
        (acknowledged) yet; or L{None} when that cannot be told, as for a
        TLS transport, which holds its own buffer.
    """
    try:
        # twisted.internet.abstract.FileDescriptor's write buffer: the bytes
        # not yet handed to the kernel (no public interface gives them;
        # tests.test_sendqueue checks them on a real connection).
        held = (
            len(transport.dataBuffer)  # type: ignore[attr-defined]
            - transport.offset  # type: ignore[attr-defined]
            + transport._tempDataLen  # type: ignore[attr-defined]
        )
        descriptor = transport.fileno()  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None
    if not isinstance(held, int) or not isinstance(descriptor, int):
        return None
    try:
        # SIOCOUTQ (the same number as TIOCOUTQ on Linux): the bytes in the
        # socket's send queue, sent or not, that the peer has not acknowledged.
        packed = fcntl.ioctl(descriptor, termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return held
    queued: int = struct.unpack("i", packed)[0]
    return held + queued
