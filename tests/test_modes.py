"""
Tests for L{ccrouter.modes}: reading the mode file.  No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.config import parseConfig
from ccrouter.modes import ModeReading, readModeFile

CONFIG = parseConfig(
    "modes:\n  antigravity: []\n  claude: []\n  auto: {failover: [antigravity, claude]}\n",
    "c.yaml",
    {},
)


class ReadModeFileTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        C7: one name, with surrounding whitespace, a trailing newline or a BOM.
        """
        for content in [b"auto", b"auto\n", b"  auto \r\n", b"\xef\xbb\xbfauto\n"]:
            self.assertEqual(readModeFile(content, CONFIG), ModeReading("auto"))

    def test_missingFile(self) -> None:
        self.assertEqual(readModeFile(None, CONFIG), ModeReading(None))

    def test_problems(self) -> None:
        """
        C7: garbage names no mode and says why, without echoing more than a
        short name.
        """
        cases = {
            b"": "is empty; it should hold one mode name",
            b"\n\n": "is empty; it should hold one mode name",
            b"auto claude": "holds 2 words; it should hold one mode name",
            b"\xff\xfe": "is not UTF-8 text; it should hold one mode name",
            b"x" * 300: "is 300 bytes long; it should hold one mode name",
            b"\x00\x01": "holds control characters, not a mode name",
            b"clade": "names unknown mode 'clade'; did you mean 'claude'?"
            " modes: antigravity, claude, auto",
            b"zzz": "names unknown mode 'zzz'; modes: antigravity, claude, auto",
            b"sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAA": "names unknown mode of"
            " 41 characters; modes: antigravity, claude, auto",
            b"a'b": "names unknown mode of 3 characters; modes: antigravity,"
            " claude, auto",
        }
        for content, problem in cases.items():
            self.assertEqual(
                readModeFile(content, CONFIG), ModeReading(None, problem), content
            )
