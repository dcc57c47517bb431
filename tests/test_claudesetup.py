"""
Tests for C{ccrouter setup claude [--undo]} (L{ccrouter.claudesetup}), run
through L{ccrouter.cli.main} against a temporary home directory.
"""

from __future__ import annotations

import json
import os
import stat
from io import StringIO
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.claudesetup import (
    BACKUP_SUFFIX,
    HEADERS_KEY,
    restoredHeaders,
    settingsPath,
    withoutToken,
    withToken,
)
from ccrouter.cli import main

URL = "http://127.0.0.1:8080"

EXISTING = """\
{
    "permissions": {
        "allow": ["Bash(npm run test:*)", "Read(~/.zshrc)"],
        "deny": ["Read(./.env)"]
    },
    "env": {"CLAUDE_CODE_ENABLE_TELEMETRY": "0", "FOO": "bar"},
    "model": "opus",
    "ünïcode": "✓"
}
"""


class SettingsCase(SynchronousTestCase):
    """
    A temporary home with C{ccrouter} run in it.
    """

    def setUp(self) -> None:
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir(parents=True)
        self.ccrouterHome = self.home / "ccrouter-home"
        self.environ = {"HOME": str(self.home), "CCROUTER_HOME": str(self.ccrouterHome)}
        self.settings = self.home / ".claude" / "settings.json"
        self.backup = Path(str(self.settings) + BACKUP_SUFFIX)
        self.record = self.ccrouterHome / "claude-setup.json"

    def ccrouter(self, *argv: str, **environ: str) -> tuple[int, str, str]:
        out, err = StringIO(), StringIO()
        status = main(list(argv), {**self.environ, **environ}, out, err)
        return status, out.getvalue(), err.getvalue()

    def writeSettings(self, text: str) -> None:
        self.settings.parent.mkdir(parents=True, exist_ok=True)
        self.settings.write_text(text, encoding="utf-8")

    def readSettings(self) -> object:
        return json.loads(self.settings.read_text(encoding="utf-8"))


class SetupClaudeTests(SettingsCase):
    def test_mergesWithWhatIsThere(self) -> None:
        """
        Only C{env.ANTHROPIC_BASE_URL} is added: every other key keeps its
        value and its place, the file is indented by two with a final
        newline, and the previous file is kept as a 0600 backup.
        """
        self.writeSettings(EXISTING)
        status, out, err = self.ccrouter("setup", "claude")
        self.assertEqual((status, err), (0, ""))
        original = json.loads(EXISTING)
        expected = dict(original)
        expected["env"] = {**original["env"], "ANTHROPIC_BASE_URL": URL}
        written = self.settings.read_text(encoding="utf-8")
        self.assertEqual(
            written, json.dumps(expected, indent=2, ensure_ascii=False) + "\n"
        )
        settings = self.readSettings()
        assert isinstance(settings, dict)
        self.assertEqual(list(settings), ["permissions", "env", "model", "ünïcode"])
        self.assertEqual(
            list(settings["env"]),
            ["CLAUDE_CODE_ENABLE_TELEMETRY", "FOO", "ANTHROPIC_BASE_URL"],
        )
        self.assertEqual(settings["permissions"], original["permissions"])
        self.assertEqual(self.backup.read_text(encoding="utf-8"), EXISTING)
        self.assertEqual(stat.S_IMODE(self.backup.stat().st_mode), 0o600)
        self.assertIn(str(self.settings), out)
        self.assertIn(URL, out)
        self.assertIn("Restart running Claude Code sessions", out)
        # Nothing left behind but the file and its backup.
        self.assertEqual(
            sorted(os.listdir(self.settings.parent)),
            ["settings.json", "settings.json" + BACKUP_SUFFIX],
        )

    def test_keepsTheFileMode(self) -> None:
        self.writeSettings("{}\n")
        self.settings.chmod(0o640)
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.assertEqual(stat.S_IMODE(self.settings.stat().st_mode), 0o640)

    def test_undoRemovesTheKey(self) -> None:
        """
        When there was no C{ANTHROPIC_BASE_URL}, C{--undo} removes it and
        the rest is as it was.
        """
        self.writeSettings(EXISTING)
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        status, out, err = self.ccrouter("setup", "claude", "--undo")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.readSettings(), json.loads(EXISTING))
        self.assertEqual(
            list(self.readSettings()["env"]),  # type: ignore[index]
            ["CLAUDE_CODE_ENABLE_TELEMETRY", "FOO"],
        )
        self.assertFalse(self.record.exists())
        self.assertIn("(not set)", out)

    def test_undoRestoresThePreviousValue(self) -> None:
        self.writeSettings(
            '{"env": {"ANTHROPIC_BASE_URL": "https://gateway.example", "X": "1"}}'
        )
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.assertEqual(
            self.readSettings(), {"env": {"ANTHROPIC_BASE_URL": URL, "X": "1"}}
        )
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        settings = self.readSettings()
        self.assertEqual(
            settings,
            {"env": {"ANTHROPIC_BASE_URL": "https://gateway.example", "X": "1"}},
        )
        assert isinstance(settings, dict)
        self.assertEqual(list(settings["env"]), ["ANTHROPIC_BASE_URL", "X"])

    def test_setupTwiceThenUndo(self) -> None:
        """
        A second setup (here on another port) keeps the value from before
        the first, and C{--undo} restores that one.
        """
        self.writeSettings('{"env": {"ANTHROPIC_BASE_URL": "https://gateway.example"}}')
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        status, out, _ = self.ccrouter("setup", "claude")
        self.assertEqual(status, 0)
        self.assertIn("nothing changed", out)
        self.assertEqual(self.ccrouter("setup", "claude", CCROUTER_PORT="9001")[0], 0)
        self.assertEqual(
            self.readSettings(),
            {"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9001"}},
        )
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        self.assertEqual(
            self.readSettings(),
            {"env": {"ANTHROPIC_BASE_URL": "https://gateway.example"}},
        )

    def test_createsTheFile(self) -> None:
        """
        With no C{~/.claude}, setup creates it and a 0600 settings file;
        undo removes the file again.
        """
        status, _out, err = self.ccrouter("setup", "claude")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.readSettings(), {"env": {"ANTHROPIC_BASE_URL": URL}})
        self.assertEqual(stat.S_IMODE(self.settings.stat().st_mode), 0o600)
        self.assertFalse(self.backup.exists())
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        self.assertFalse(self.settings.exists())

    def test_undoRemovesTheEnvItCreated(self) -> None:
        self.writeSettings('{"model": "sonnet"}\n')
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.assertEqual(
            self.readSettings(), {"model": "sonnet", "env": {"ANTHROPIC_BASE_URL": URL}}
        )
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        self.assertEqual(self.settings.read_text(), '{\n  "model": "sonnet"\n}\n')

    def test_undoKeepsAnEnvThatGainedEntries(self) -> None:
        self.writeSettings('{"model": "sonnet"}\n')
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        settings = self.readSettings()
        assert isinstance(settings, dict)
        settings["env"]["OTHER"] = "1"
        self.writeSettings(json.dumps(settings))
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        self.assertEqual(
            self.readSettings(), {"model": "sonnet", "env": {"OTHER": "1"}}
        )

    def test_invalidJSONIsRefused(self) -> None:
        """
        A file that is not JSON is named with the line and column of the
        problem, and left exactly as it was.
        """
        text = '{\n  "model": "opus",\n}\n'
        self.writeSettings(text)
        status, _out, err = self.ccrouter("setup", "claude")
        self.assertEqual(status, 1)
        self.assertIn(f"{self.settings}:3:1: not valid JSON", err)
        self.assertIn("not changed", err)
        self.assertEqual(self.settings.read_text(), text)
        self.assertFalse(self.backup.exists())
        self.assertFalse(self.record.exists())

    def test_notAnObjectIsRefused(self) -> None:
        for text, problem in [
            ("[1, 2]\n", "the top level is a JSON array"),
            ('{"env": "ANTHROPIC_BASE_URL=x"}\n', '"env" is a JSON string'),
        ]:
            self.writeSettings(text)
            status, _, err = self.ccrouter("setup", "claude")
            self.assertEqual(status, 1)
            self.assertIn(f"{self.settings}: {problem}", err)
            self.assertEqual(self.settings.read_text(), text)

    def test_portFromTheEnvironment(self) -> None:
        status, _out, _ = self.ccrouter("setup", "claude", CCROUTER_PORT="9123")
        self.assertEqual(status, 0)
        self.assertEqual(
            self.readSettings(),
            {"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9123"}},
        )

    def test_portFromTheConfig(self) -> None:
        self.ccrouterHome.mkdir()
        (self.ccrouterHome / "config.yaml").write_text(
            'server:\n  port: 8765\ndefault:\n  url: "https://api.anthropic.com"\n'
        )
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.assertEqual(
            self.readSettings(),
            {"env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8765"}},
        )

    def test_claudeConfigDir(self) -> None:
        """
        C{CLAUDE_CONFIG_DIR} moves the settings, as it does for Claude Code.
        """
        elsewhere = self.home / "claude-elsewhere"
        status, _, _ = self.ccrouter(
            "setup", "claude", CLAUDE_CONFIG_DIR=str(elsewhere)
        )
        self.assertEqual(status, 0)
        self.assertEqual(
            json.loads((elsewhere / "settings.json").read_text()),
            {"env": {"ANTHROPIC_BASE_URL": URL}},
        )
        self.assertFalse(self.settings.exists())
        self.assertEqual(
            settingsPath({"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}), "/c/settings.json"
        )
        self.assertEqual(settingsPath({"HOME": "/h"}), "/h/.claude/settings.json")

    def test_writesThroughASymlink(self) -> None:
        """
        A settings file that is a symbolic link (a dotfiles checkout) stays
        one; its target is what changes.
        """
        target = self.home / "dotfiles" / "claude-settings.json"
        target.parent.mkdir()
        target.write_text('{"model": "opus"}\n')
        self.settings.parent.mkdir()
        self.settings.symlink_to(target)
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.assertTrue(self.settings.is_symlink())
        self.assertEqual(
            json.loads(target.read_text()),
            {"model": "opus", "env": {"ANTHROPIC_BASE_URL": URL}},
        )

    def test_undoWithoutSetup(self) -> None:
        status, _, err = self.ccrouter("setup", "claude", "--undo")
        self.assertEqual(status, 1)
        self.assertIn("nothing to undo", err)

    def test_undoLeavesAValueSomeoneElseSet(self) -> None:
        """
        When the value was changed after setup, undo does not overwrite it.
        """
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        changed = '{"env": {"ANTHROPIC_BASE_URL": "https://mine.example"}}\n'
        self.writeSettings(changed)
        status, _, err = self.ccrouter("setup", "claude", "--undo")
        self.assertEqual(status, 1)
        self.assertIn("left as it is", err)
        self.assertEqual(self.settings.read_text(), changed)

    def test_invalidConfigIsReported(self) -> None:
        self.ccrouterHome.mkdir()
        (self.ccrouterHome / "config.yaml").write_text("server:\n  prot: 1\n")
        status, _, err = self.ccrouter("setup", "claude")
        self.assertEqual(status, 1)
        self.assertIn("config.yaml:2", err)
        self.assertFalse(self.settings.exists())


LOCAL_TOKEN = "Ct6Kq9Hx3Bv8Rz2Wm7-CANARY"
HEADER = f"x-ccrouter-token: {LOCAL_TOKEN}"


class LocalTokenSetupTests(SettingsCase):
    """
    With a config that requires the local token, C{setup claude} also sends
    it: an C{x-ccrouter-token} line in C{env.ANTHROPIC_CUSTOM_HEADERS},
    merged with the headers there, taken out again by C{--undo}.  The token
    is never printed.
    """

    def setUp(self) -> None:
        super().setUp()
        self.ccrouterHome.mkdir()
        self.tokenFile = self.ccrouterHome / "token"
        self.writeToken(LOCAL_TOKEN)
        (self.ccrouterHome / "config.yaml").write_text("server: {token_file: token}\n")

    def writeToken(self, token: str) -> None:
        self.tokenFile.write_text(token + "\n")
        self.tokenFile.chmod(0o600)

    def ccrouter(self, *argv: str, **environ: str) -> tuple[int, str, str]:
        status, out, err = super().ccrouter(*argv, **environ)
        for start in range(len(LOCAL_TOKEN) - 3):
            self.assertNotIn(LOCAL_TOKEN[start : start + 4], out + err)
        return status, out, err

    def env(self) -> dict[str, str]:
        settings = self.readSettings()
        assert isinstance(settings, dict)
        env = settings.get("env", {})
        assert isinstance(env, dict)
        return env

    def claudeHeaders(self) -> dict[str, str]:
        """
        The headers Claude Code sends from C{ANTHROPIC_CUSTOM_HEADERS}, read
        as it reads them (lines split on the first colon).
        """
        headers = {}
        for line in self.env().get("ANTHROPIC_CUSTOM_HEADERS", "").splitlines():
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip()] = value.strip()
        return headers

    def test_sendsTheToken(self) -> None:
        """
        S7: Claude Code is given the token from the config's token file,
        and the settings are made private (0600) since they hold it.
        """
        self.writeSettings('{"env": {"X": "1"}}\n')
        self.settings.chmod(0o644)
        status, out, err = self.ccrouter("setup", "claude")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            self.env(), {"X": "1", "ANTHROPIC_BASE_URL": URL, HEADERS_KEY: HEADER}
        )
        self.assertEqual(self.claudeHeaders(), {"x-ccrouter-token": LOCAL_TOKEN})
        self.assertEqual(stat.S_IMODE(self.settings.stat().st_mode), 0o600)
        self.assertIn(f"made {self.settings} private (mode 0600, was 0644)", out)
        self.assertIn(
            f"x-ccrouter-token header (the local token, from {self.tokenFile})", out
        )
        self.assertNotIn("ccrouter-token", self.record.read_text())
        status, out, _ = self.ccrouter("setup", "claude")
        self.assertIn("nothing changed", out)

    def test_mergesWithOtherHeaders(self) -> None:
        """
        Other custom headers stay, in order; a stale token line (any
        spelling of the name) is replaced; undo puts back the old value
        exactly.
        """
        previous = (
            "X-Route-Hint: b\r\nX-CCRouter-Token: old-token-from-before\nX-Team: core"
        )
        self.writeSettings(json.dumps({"env": {HEADERS_KEY: previous}}))
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.assertEqual(
            self.env()[HEADERS_KEY], f"X-Route-Hint: b\nX-Team: core\n{HEADER}"
        )
        self.assertEqual(
            self.claudeHeaders(),
            {"X-Route-Hint": "b", "X-Team": "core", "x-ccrouter-token": LOCAL_TOKEN},
        )
        status, out, _ = self.ccrouter("setup", "claude", "--undo")
        self.assertEqual(status, 0)
        self.assertEqual(self.env(), {HEADERS_KEY: previous})
        self.assertIn("no longer sends the x-ccrouter-token header", out)

    def test_undoRemovesWhatItAdded(self) -> None:
        self.writeSettings('{"model": "opus"}\n')
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.assertEqual(self.env()[HEADERS_KEY], HEADER)
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        self.assertEqual(self.readSettings(), {"model": "opus"})

    def test_undoKeepsHeadersAddedSince(self) -> None:
        self.writeSettings(json.dumps({"env": {HEADERS_KEY: "X-A: 1"}}))
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        settings = self.readSettings()
        assert isinstance(settings, dict)
        settings["env"][HEADERS_KEY] += "\nX-B: 2"
        self.writeSettings(json.dumps(settings))
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        self.assertEqual(self.env(), {HEADERS_KEY: "X-A: 1\nX-B: 2"})

    def test_rotatedToken(self) -> None:
        """
        After the token file changes, running setup again gives Claude Code
        the new token; undo still goes back to before the first setup.
        """
        self.writeSettings(json.dumps({"env": {HEADERS_KEY: "X-A: 1"}}))
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        self.writeToken("Nw2-rotated-token-Jk5Lp9")
        status, out, _ = self.ccrouter("setup", "claude")
        self.assertEqual(status, 0)
        self.assertNotIn("Nw2-rotated", out)
        self.assertEqual(
            self.env()[HEADERS_KEY],
            "X-A: 1\nx-ccrouter-token: Nw2-rotated-token-Jk5Lp9",
        )
        self.assertEqual(self.ccrouter("setup", "claude", "--undo")[0], 0)
        self.assertEqual(self.env(), {HEADERS_KEY: "X-A: 1"})

    def test_tokenTakenOutOfTheConfig(self) -> None:
        """
        When the config no longer requires a token, setup takes back the
        header it added.
        """
        self.writeSettings(json.dumps({"env": {HEADERS_KEY: "X-A: 1"}}))
        self.assertEqual(self.ccrouter("setup", "claude")[0], 0)
        (self.ccrouterHome / "config.yaml").write_text("server: {port: 8080}\n")
        status, out, _ = self.ccrouter("setup", "claude")
        self.assertEqual(status, 0)
        self.assertEqual(self.env(), {HEADERS_KEY: "X-A: 1", "ANTHROPIC_BASE_URL": URL})
        self.assertIn("no x-ccrouter-token header", out)

    def test_tokenFromTheEnvironment(self) -> None:
        """
        A C{${NAME}} token is given to Claude Code when this shell has it,
        and refused, changing nothing, when it has not.
        """
        (self.ccrouterHome / "config.yaml").write_text(
            "server: {token: '${CCROUTER_TOKEN}'}\n"
        )
        status, _, err = self.ccrouter("setup", "claude")
        self.assertEqual(status, 1)
        self.assertIn("environment variable this shell does not have", err)
        self.assertFalse(self.settings.exists())
        self.assertFalse(self.record.exists())
        status, _, _ = self.ccrouter("setup", "claude", CCROUTER_TOKEN=LOCAL_TOKEN)
        self.assertEqual(status, 0)
        self.assertEqual(self.env()[HEADERS_KEY], HEADER)

    def test_badTokenFile(self) -> None:
        self.tokenFile.chmod(0o644)
        status, _, err = self.ccrouter("setup", "claude")
        self.assertEqual(status, 1)
        self.assertIn("chmod 600", err)
        self.assertFalse(self.settings.exists())

    def test_headersNotAString(self) -> None:
        text = json.dumps({"env": {HEADERS_KEY: ["X-A: 1"]}})
        self.writeSettings(text)
        status, _, err = self.ccrouter("setup", "claude")
        self.assertEqual(status, 1)
        self.assertIn(f'"env.{HEADERS_KEY}" is a JSON array, not a string', err)
        self.assertEqual(self.settings.read_text(), text)


class CustomHeadersTests(SynchronousTestCase):
    """
    The pure parts: C{ANTHROPIC_CUSTOM_HEADERS} with and without the token.
    """

    def test_withToken(self) -> None:
        self.assertEqual(withToken(None, "t" * 16), "x-ccrouter-token: " + "t" * 16)
        self.assertEqual(withToken("", "t" * 16), "x-ccrouter-token: " + "t" * 16)
        self.assertEqual(
            withToken("A: 1\n\nx-ccrouter-token: old\n", "new"),
            "A: 1\nx-ccrouter-token: new",
        )

    def test_withoutToken(self) -> None:
        self.assertEqual(
            withoutToken("A: 1\r\n X-CCROUTER-TOKEN :x\nB: 2"), "A: 1\nB: 2"
        )
        self.assertEqual(withoutToken(None), "")

    def test_restoredHeaders(self) -> None:
        self.assertIsNone(restoredHeaders("x-ccrouter-token: t", {"had_key": False}))
        self.assertEqual(
            restoredHeaders("x-ccrouter-token: t", {"had_key": True, "previous": ""}),
            "",
        )
        self.assertEqual(
            restoredHeaders(
                "A: 1\nx-ccrouter-token: t", {"had_key": True, "previous": "A: 1\n"}
            ),
            "A: 1\n",
        )
        self.assertEqual(
            restoredHeaders(
                "B: 2\nx-ccrouter-token: t", {"had_key": True, "previous": "A: 1"}
            ),
            "B: 2",
        )
