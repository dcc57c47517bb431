"""
Tests for L{ccrouter.guard}'s host name handling.  No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.guard import hostName, isLoopback


class HostTests(SynchronousTestCase):
    def test_hostName(self) -> None:
        cases = {
            b"127.0.0.1:8080": "127.0.0.1",
            b"LocalHost": "localhost",
            b"[::1]:8080": "::1",
            b"[::1]": "::1",
            b"::1": "::1",
            b"example.com:80": "example.com",
        }
        for raw, name in cases.items():
            self.assertEqual(hostName(raw), name, raw)

    def test_loopback(self) -> None:
        for name in ["localhost", "127.0.0.1", "127.9.9.9", "::1", "dev.localhost"]:
            self.assertTrue(isLoopback(name), name)
        for name in [
            "",
            "0.0.0.0",
            "10.0.0.1",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "::ffff:8.8.8.8",
        ]:
            self.assertFalse(isLoopback(name), name)
