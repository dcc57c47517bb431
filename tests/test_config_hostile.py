"""
The config loader against hostile or broken files and environments
(reliability.md C2, C3, C4): YAML that would run code or blow up, files far
too large, values that would smuggle header lines, and C{${NAME}}
expansion that must happen exactly once.  No reactor; time bounds are
generous (the measured figures are far below them).
"""

from __future__ import annotations

import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    checkConfig,
    literalSecrets,
    parseConfig,
    permissionWarning,
)
from ccrouter.tap import loadConfig

#: Far above what any of these takes (a few ms); a parser that walks the
#: expanded aliases or reads 10 MB would take minutes or seconds.
GENEROUS = 2.0


def billionLaughs(indent: str = "") -> str:
    """
    Nine levels of anchors, each a list of nine aliases of the one before:
    9**9 strings once expanded.
    """
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"{indent}l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


class HostileYAMLTests(SynchronousTestCase):
    def assertQuickConfigError(self, text: str, expected: str) -> None:
        started = time.monotonic()
        with self.assertRaises(ConfigError) as raised:
            parseConfig(text, "c.yaml", {})
        problems = checkConfig(text, "c.yaml", {})
        secrets = literalSecrets(text)
        elapsed = time.monotonic() - started
        self.assertIn(expected, str(raised.exception))
        self.assertTrue(problems)
        self.assertEqual(secrets, [])
        self.assertLess(elapsed, GENEROUS)

    def test_pythonTagsRunNothing(self) -> None:
        """
        C4: C{!!python/object/apply} is refused as a tag like any other:
        nothing is constructed, let alone run.
        """
        marker = Path(self.mktemp()).absolute()
        self.assertQuickConfigError(
            f"modes: !!python/object/apply:os.mkdir ['{marker}']\n",
            "c.yaml:1: modes: expected a mapping, found"
            " tag:yaml.org,2002:python/object/apply:os.mkdir",
        )
        self.assertQuickConfigError(
            f"default: {{url: !!python/object/apply:os.mkdir ['{marker}']}}\n",
            "default.url: expected a string",
        )
        self.assertFalse(marker.exists())

    def test_billionLaughs(self) -> None:
        """
        C4: nine levels of aliases are refused at once, wherever they are:
        the loader, the checker and the literal-key scan (which walks the
        whole tree, and used to walk every path through the aliases) each
        look at a node once.
        """
        self.assertQuickConfigError(billionLaughs(), "c.yaml:1: l0: unknown key 'l0'")
        self.assertQuickConfigError(
            "upstreams:\n" + billionLaughs("  "),
            "c.yaml:2: upstreams.l0: expected a mapping, found a list",
        )
        self.assertQuickConfigError(
            "server:\n  allowed_hosts: [*l9]\nx:\n" + billionLaughs("  "),
            "found undefined alias 'l9'",
        )

    def test_aliasesInAValidConfig(self) -> None:
        """
        C4: anchors stay usable (to share an upstream's settings), and a
        literal key reached through an alias is reported once.
        """
        text = (
            "upstreams:\n"
            "  a: &shared {url: 'https://a.example', auth: {header: x-api-key,"
            " value: sk-literal}}\n"
            "  b: *shared\n"
        )
        config = parseConfig(text, "c.yaml", {})
        self.assertEqual(
            [(upstream.name, upstream.origin) for upstream in config.upstreams],
            [("a", "https://a.example"), ("b", "https://a.example")],
        )
        self.assertEqual(literalSecrets(text), ["upstreams.a.auth.value"])

    def test_billionLaughsInAReadableFile(self) -> None:
        """
        C4: the start-up permission check scans a world-readable config for
        literal keys; aliases do not make it hang.
        """
        path = Path(self.mktemp())
        path.write_text(billionLaughs())
        path.chmod(0o644)
        started = time.monotonic()
        self.assertIsNone(permissionWarning(str(path), path.read_text()))
        self.assertLess(time.monotonic() - started, GENEROUS)

    def test_tenMegabytes(self) -> None:
        """
        C4: a 10 MB config (valid YAML, a comment) is refused for its size
        before it is parsed or even read whole.
        """
        path = Path(self.mktemp())
        path.write_text("# " + "x" * (10 * 1024 * 1024) + "\ndefault: {}\n")
        started = time.monotonic()
        with self.assertRaises(ConfigError) as raised:
            loadConfig(str(path), {})
        self.assertLess(time.monotonic() - started, GENEROUS)
        self.assertEqual(
            str(raised.exception),
            f"{path}: is larger than 1024 KiB; a config file is a few KiB",
        )
        text = "# " + "é" * (MAX_CONFIG_BYTES // 2) + "\n"
        self.assertGreater(len(text.encode()), MAX_CONFIG_BYTES)
        self.assertEqual(
            [str(problem) for problem in checkConfig(text, "c.yaml", {})],
            ["c.yaml: is larger than 1024 KiB; a config file is a few KiB"],
        )

    def test_largestAcceptedSize(self) -> None:
        text = "default: {}\n" + "#" * (MAX_CONFIG_BYTES - 13) + "\n"
        self.assertEqual(len(text), MAX_CONFIG_BYTES)
        parseConfig(text, "c.yaml", {})

    def test_duplicateKeys(self) -> None:
        """
        C4: a key given twice is an error, at any depth, never silently
        the last one.
        """
        for text, expected in [
            ("server: {}\nserver: {}\n", "c.yaml:2: server: duplicate key"),
            (
                "upstreams:\n  zai: {url: 'https://a'}\n  zai: {url: 'https://b'}\n",
                "c.yaml:3: upstreams.zai: duplicate key",
            ),
            (
                "default: {url: 'https://a', url: 'https://b'}\n",
                "c.yaml:1: default.url: duplicate key",
            ),
        ]:
            self.assertQuickConfigError(text, expected)


KEYED = (
    "upstreams:\n  zai:\n    url: https://api.z.ai/api/anthropic\n"
    "    auth: {header: x-api-key, value: '%s'}\n"
)


class ExpansionTests(SynchronousTestCase):
    def key(self, value: str, environ: dict[str, str]) -> str:
        [upstream] = parseConfig(KEYED % value, "c.yaml", environ).upstreams
        assert upstream.auth is not None
        return upstream.auth.value

    def test_noRecursiveExpansion(self) -> None:
        """
        C3: a variable whose value holds C{${OTHER}} gives that text as it
        is; it is not expanded again.
        """
        environ = {"KEY": "${OTHER}", "OTHER": "sk-other-secret"}
        self.assertEqual(self.key("${KEY}", environ), "${OTHER}")
        self.assertEqual(
            self.key("${KEY}-${OTHER}", environ), "${OTHER}-sk-other-secret"
        )
        environ = {"KEY": "$${OTHER}"}
        self.assertEqual(self.key("${KEY}", environ), "$${OTHER}")

    def test_escapes(self) -> None:
        """
        C3: C{$${NAME}} is the literal C{${NAME}}; a C{$} or C{$$} not
        followed by a brace is itself.
        """
        self.assertEqual(self.key("a$${KEY}b", {}), "a${KEY}b")
        self.assertEqual(self.key("p$$q$r", {}), "p$$q$r")
        self.assertEqual(self.key("$${KEY}${KEY}", {"KEY": "k"}), "${KEY}k")

    def test_unusableVariables(self) -> None:
        """
        C2: a variable that is unset, empty, or holds a line break or NUL
        is refused, naming the variable and never its value.
        """
        cases = {
            None: "environment variable KEY is not set",
            "": "environment variable KEY is empty",
            "sk-CANARY-1\n": "environment variable KEY holds a line break or NUL",
            "sk-CANARY-2\r\nHost: evil": "environment variable KEY holds a line"
            " break or NUL",
            "sk-CANARY-3\x00": "environment variable KEY holds a line break or NUL",
        }
        for value, expected in cases.items():
            environ = {} if value is None else {"KEY": value}
            with self.assertRaises(ConfigError) as raised:
                parseConfig(KEYED % "${KEY}", "c.yaml", environ)
            self.assertEqual(
                str(raised.exception),
                f"c.yaml:4: upstreams.zai.auth.value: {expected}",
            )
            self.assertNotIn("CANARY", str(raised.exception))

    def test_spaceIsKept(self) -> None:
        """
        C2: a space is part of a value (C{Bearer ${KEY}}, or a key variable
        that holds one): it is passed on, not refused.
        """
        self.assertEqual(self.key("Bearer ${KEY}", {"KEY": "a b"}), "Bearer a b")
