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

from ccrouter.claudesetup import BACKUP_SUFFIX, settingsPath
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


class SetupClaudeTests(SynchronousTestCase):
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
