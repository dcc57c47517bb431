"""
Tests for L{ccrouter.configcmd}: C{ccrouter config show | path | edit |
reset | check} and C{ccrouter init}, run through L{ccrouter.cli.main} in a
temporary C{CCROUTER_HOME}.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from io import StringIO

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.cli import main
from ccrouter.config import literalSecrets, parseConfig, permissionWarning
from ccrouter.configcmd import template

CANARY = "Zq8Kx3Vw7Jm2Pd9Ht5Nb"
LOCAL_TOKEN = "Lt4-local-CANARY-Wd7Yh2Pq"

WITH_SECRETS = f"""\
default_mode: auto
upstreams:
  zai:
    url: "https://api.z.ai/api/anthropic"
    auth: {{header: x-api-key, value: "{CANARY}"}}
  env:
    url: "http://127.0.0.1:8317"
    auth: {{header: authorization, value: "Bearer ${{ENV_KEY}}"}}
modes:
  claude: []
  glm:
    - match: "claude-haiku"
      model: "glm-4.5-air"
      upstream: zai
    - match: "kimi-*"
      upstream:
        url: "https://api.moonshot.ai/anthropic"
        auth: {{header: authorization, value: "Bearer {CANARY}"}}
  auto: {{failover: [claude, glm, env]}}
breaker:
  failures: 4
  cooldowns: [90s, 2h]
timeouts:
  idle: 45s
"""

VALID = """\
server:
  port: 8099
routes:
  - match: "claude-haiku"
    model: "glm-4.5-air"
"""

INVALID = """\
server:
  port: many
routes:
  - match: "claude-haiku"
    uptream: zai
"""


class CommandCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = self.mktemp()
        os.makedirs(self.home)
        self.configFile = os.path.join(self.home, "config.yaml")
        self.environ = {"CCROUTER_HOME": self.home, "HOME": self.home}

    def run_(self, *argv: str, **environ: str) -> tuple[int, str, str]:
        out, err = StringIO(), StringIO()
        status = main(list(argv), {**self.environ, **environ}, out, err)
        return status, out.getvalue(), err.getvalue()

    def write(self, path: str, text: str, mode: int = 0o600) -> None:
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def mode(self, path: str) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)


class ShowTests(CommandCase):
    def test_masksSecrets(self) -> None:
        """
        Every credential is shown as its length only: no run of four or
        more of its characters appears anywhere in the output.
        """
        self.write(self.configFile, WITH_SECRETS)
        status, out, err = self.run_("config", "show", ENV_KEY="Fy6Ru4Gc1Lk0")
        self.assertEqual(status, 0, err)
        everything = out + err
        for secret in (CANARY, "Fy6Ru4Gc1Lk0"):
            for start in range(len(secret) - 3):
                self.assertNotIn(secret[start : start + 4], everything)
        self.assertIn(f"<secret, {len(CANARY)} characters>", out)
        self.assertIn(f"<secret, {len('Bearer ' + CANARY)} characters>", out)
        self.assertIn(f"<secret, {len('Bearer Fy6Ru4Gc1Lk0')} characters>", out)

    def test_showsEverything(self) -> None:
        self.write(self.configFile, WITH_SECRETS)
        status, out, _ = self.run_("config", ENV_KEY="k")
        self.assertEqual(status, 0)
        for expected in (
            "port: 8080",
            "url: https://api.z.ai:443/api/anthropic",
            "auth: {header: x-api-key, value: <secret,",
            '- match: "claude-haiku"',
            'model: "glm-4.5-air"',
            "upstream: zai",
            "url: https://api.moonshot.ai:443/anthropic",
            "failover: [claude (mode), glm (mode), env (upstream)]",
            "default_mode: auto",
            f"mode_file: {os.path.join(os.path.abspath(self.home), 'mode')}",
            "failures: 4",
            "timeouts: 2",
            "cooldowns: [90s, 2h]",
            "stream_headers: 1m, idle: 45s",
            "max_body_bytes: 32MiB",
        ):
            self.assertIn(expected, out)

    def test_environmentOverrides(self) -> None:
        status, out, _ = self.run_(
            "config",
            "show",
            CCROUTER_PORT="9123",
            CCROUTER_UPSTREAM="http://127.0.0.1:4000/base",
        )
        self.assertEqual(status, 0)
        self.assertIn("does not exist: the built-in default", out)
        self.assertIn("port: 9123", out)
        self.assertIn("url: http://127.0.0.1:4000/base", out)
        self.assertIn("overridden by the environment: CCROUTER_PORT", out)

    def test_invalid(self) -> None:
        self.write(self.configFile, INVALID)
        status, out, err = self.run_("config", "show")
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertIn("config.yaml:2: server.port: expected an integer", err)

    def test_token(self) -> None:
        """
        The local token is shown as its length and where it comes from,
        never any of its characters; without one, the output says so.
        """
        _, out, _ = self.run_("config", "show")
        self.assertIn("  token: none  # any local client may use the proxy\n", out)
        tokenFile = os.path.join(os.path.abspath(self.home), "token")
        self.write(tokenFile, LOCAL_TOKEN + "\n")
        self.write(self.configFile, "server: {token_file: token}\n")
        status, out, err = self.run_("config", "show")
        self.assertEqual(status, 0, err)
        self.assertIn(
            f"  token_file: {tokenFile}  # <secret, {len(LOCAL_TOKEN)} characters>",
            out,
        )
        self.write(self.configFile, "server: {token: '${CCROUTER_TOKEN}'}\n")
        _, out, _ = self.run_("config", "show", CCROUTER_TOKEN=LOCAL_TOKEN)
        self.assertIn(f"  token: <secret, {len(LOCAL_TOKEN)} characters>\n", out)
        _, withoutIt, _ = self.run_("config", "show")
        self.assertIn(
            "  token: <from the environment; not set in this shell>\n", withoutIt
        )
        for start in range(len(LOCAL_TOKEN) - 3):
            self.assertNotIn(LOCAL_TOKEN[start : start + 4], out + withoutIt)

    def test_permissionWarning(self) -> None:
        self.write(self.configFile, WITH_SECRETS, 0o644)
        _, _, err = self.run_("config", "show", ENV_KEY="k")
        self.assertIn("warning:", err)
        self.assertIn("upstreams.zai.auth.value", err)


class PathTests(CommandCase):
    def test_missing(self) -> None:
        status, out, err = self.run_("config", "path")
        self.assertEqual(status, 0)
        self.assertEqual(out, os.path.join(os.path.abspath(self.home), "config.yaml\n"))
        self.assertIn("not created yet; run ccrouter init", err)

    def test_exists(self) -> None:
        self.write(self.configFile, VALID)
        status, out, err = self.run_("config", "path")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.strip(), os.path.abspath(self.configFile))


class CheckTests(CommandCase):
    def test_everyProblem(self) -> None:
        path = os.path.join(self.home, "other.yaml")
        self.write(
            path,
            """\
server:
  port: 99999
  hots: x
upstreams:
  zai:
    url: "ftp://api.z.ai"
  deep:
    url: "https://api.deepseek.com"
    auth: {header: x-api-key, value: "${MISSING_VAR}"}
routes:
  - match: "claude-haiku"
    upstream: zai
  - match: "claude-sonnet"
    upstream: deeepseek
  - model: "x"
breaker:
  cooldowns: [1s, never]
""",
        )
        status, out, _ = self.run_("config", "check", path)
        self.assertEqual(status, 1)
        self.assertEqual(
            out.splitlines(),
            [
                f"{path}:2: server.port: must be between 0 and 65535",
                f"{path}:3: server.hots: unknown key 'hots'; did you mean 'host'?",
                f"{path}:6: upstreams.zai.url: the URL must start with http:// or"
                " https://",
                f"{path}:9: upstreams.deep.auth.value: environment variable"
                " MISSING_VAR is not set",
                f"{path}:14: routes[1].upstream: no upstream named 'deeepseek'"
                " under 'upstreams'; did you mean 'deep'?",
                f"{path}:15: routes[2]: a route needs 'match' (a model name pattern)",
                f"{path}:17: breaker.cooldowns[1]: 'never' is not a duration"
                " (seconds, or a number with ms, s, m or h)",
            ],
        )

    def test_ok(self) -> None:
        path = os.path.join(self.home, "good.yaml")
        self.write(path, VALID)
        status, out, _ = self.run_("config", "check", path)
        self.assertEqual((status, out), (0, f"{path}: ok\n"))

    def test_usesEnvironment(self) -> None:
        path = os.path.join(self.home, "env.yaml")
        self.write(path, WITH_SECRETS)
        self.assertEqual(self.run_("config", "check", path)[0], 1)
        self.assertEqual(self.run_("config", "check", path, ENV_KEY="k")[0], 0)

    def test_unreadable(self) -> None:
        path = os.path.join(self.home, "missing.yaml")
        status, out, _ = self.run_("config", "check", path)
        self.assertEqual(status, 1)
        self.assertEqual(out, f"{path}: cannot read: No such file or directory\n")

    def test_tokenFile(self) -> None:
        """
        The token file is read as the daemon reads it: one that is missing
        or open to others is a problem.
        """
        path = os.path.join(os.path.abspath(self.home), "with-token.yaml")
        tokenFile = os.path.join(os.path.abspath(self.home), "token")
        self.write(path, "server:\n  token_file: token\n")
        status, out, _ = self.run_("config", "check", path)
        self.assertEqual(status, 1)
        self.assertEqual(
            out,
            f"{path}:2: server.token_file: {tokenFile} does not exist"
            " ('ccrouter init' creates it)\n",
        )
        self.write(tokenFile, LOCAL_TOKEN, 0o640)
        status, out, _ = self.run_("config", "check", path)
        self.assertEqual(status, 1)
        self.assertIn("can be read or written by others (mode 0640)", out)
        os.chmod(tokenFile, 0o600)
        self.assertEqual(self.run_("config", "check", path), (0, f"{path}: ok\n", ""))

    def test_usage(self) -> None:
        self.assertEqual(self.run_("config", "check")[0], 2)
        self.assertEqual(self.run_("config", "path", "x.yaml")[0], 2)


class EditTests(CommandCase):
    def setUp(self) -> None:
        super().setUp()
        self.log = os.path.join(self.home, "editor.log")

    def editor(self, *versions: str, status: int = 0) -> str:
        """
        An editor script that writes C{versions[n]} into the file on its
        n-th run (and logs each run with the file's mode), then exits with
        C{status}.
        """
        for index, text in enumerate(versions):
            self.write(os.path.join(self.home, f"version{index}"), text)
        script = os.path.join(self.home, "editor.sh")
        self.write(
            script,
            f"""#!/bin/sh
for file; do :; done
n=$(wc -l < "{self.log}" 2>/dev/null || echo 0)
n=$(echo $n)
echo "$* $(stat -c %a "$file")" >> "{self.log}"
if [ -f "{self.home}/version$n" ]; then cat "{self.home}/version$n" > "$file"; fi
exit {status}
""",
            0o700,
        )
        return script

    def runs(self) -> list[str]:
        try:
            return self.read(self.log).splitlines()
        except FileNotFoundError:
            return []

    def test_valid(self) -> None:
        """
        A valid edit replaces the config, 0600; the editor worked on a 0600
        copy in the same directory, which is gone afterwards.
        """
        self.write(self.configFile, VALID + "# v1\n", 0o600)
        script = self.editor(VALID + "# v2\n")
        status, out, err = self.run_("config", "edit", EDITOR=f"{script} --flag")
        self.assertEqual(status, 0, err)
        self.assertEqual(self.read(self.configFile), VALID + "# v2\n")
        self.assertEqual(self.mode(self.configFile), 0o600)
        self.assertIn("Saved", out)
        self.assertIn("within a second", out)
        [run] = self.runs()
        edited, mode = run.rsplit(" ", 1)
        self.assertEqual(mode, "600")
        self.assertTrue(edited.startswith("--flag "))
        temporary = edited.split(" ", 1)[1]
        self.assertEqual(os.path.dirname(temporary), os.path.abspath(self.home))
        self.assertFalse(os.path.exists(temporary))
        self.assertEqual(
            sorted(os.listdir(self.home)),
            ["config.yaml", "editor.log", "editor.sh", "version0"],
        )

    def test_visualFirst(self) -> None:
        self.write(self.configFile, VALID)
        script = self.editor(VALID + "# edited\n")
        status, _, _ = self.run_(
            "config", "edit", VISUAL=script, EDITOR="/nonexistent/editor"
        )
        self.assertEqual(status, 0)
        self.assertEqual(self.read(self.configFile), VALID + "# edited\n")

    def test_invalidThenValid(self) -> None:
        """
        An invalid edit lists its problems and asks; yes re-opens the editor
        on the same copy.
        """
        self.write(self.configFile, VALID)
        script = self.editor(INVALID, VALID + "# fixed\n")
        self.patch(sys, "stdin", StringIO("y\n"))
        status, out, err = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 0, err)
        self.assertIn("config.yaml:2: server.port: expected an integer", err)
        self.assertIn("config.yaml:5: routes[0].uptream: unknown key 'uptream'", err)
        self.assertIn("Edit again? [Y/n] ", out)
        self.assertEqual(self.read(self.configFile), VALID + "# fixed\n")
        first, second = self.runs()
        self.assertEqual(first.split()[0], second.split()[0])

    def test_declined(self) -> None:
        self.write(self.configFile, VALID)
        script = self.editor(INVALID)
        self.patch(sys, "stdin", StringIO("n\n"))
        status, _, err = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 1)
        self.assertIn("unchanged", err)
        self.assertEqual(self.read(self.configFile), VALID)
        self.assertEqual(len(self.runs()), 1)
        self.assertEqual(
            sorted(os.listdir(self.home)),
            ["config.yaml", "editor.log", "editor.sh", "version0"],
        )

    def test_missingTokenFileIsAProblem(self) -> None:
        self.write(self.configFile, VALID)
        script = self.editor(VALID.replace("  port:", "  token_file: nowhere\n  port:"))
        self.patch(sys, "stdin", StringIO("n\n"))
        status, _, err = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 1)
        self.assertIn("server.token_file:", err)
        self.assertIn("nowhere does not exist", err)
        self.assertEqual(self.read(self.configFile), VALID)

    def test_endOfInput(self) -> None:
        self.write(self.configFile, VALID)
        script = self.editor(INVALID)
        self.patch(sys, "stdin", StringIO(""))
        status, _, _ = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 1)
        self.assertEqual(self.read(self.configFile), VALID)

    def test_bounded(self) -> None:
        self.write(self.configFile, VALID)
        script = self.editor(*[INVALID] * 30)
        self.patch(sys, "stdin", StringIO("\n" * 30))
        status, _, err = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 1)
        self.assertEqual(len(self.runs()), 20)
        self.assertIn("after 20 rounds", err)
        self.assertEqual(self.read(self.configFile), VALID)

    def test_editorFails(self) -> None:
        self.write(self.configFile, VALID)
        script = self.editor(VALID + "# not kept\n", status=3)
        status, _, err = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 1)
        self.assertIn("status 3", err)
        self.assertEqual(self.read(self.configFile), VALID)

    def test_noEditor(self) -> None:
        self.write(self.configFile, VALID)
        status, _, err = self.run_("config", "edit", EDITOR="/nonexistent/editor")
        self.assertEqual(status, 1)
        self.assertIn("cannot run the editor", err)
        self.assertEqual(os.listdir(self.home), ["config.yaml"])

    def test_createsFromTemplate(self) -> None:
        script = self.editor()
        status, out, _ = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 0)
        self.assertIn("Created", out)
        self.assertIn("No changes", out)
        self.assertEqual(self.read(self.configFile), template())
        self.assertEqual(self.mode(self.configFile), 0o600)

    def test_changedMeanwhile(self) -> None:
        """
        If something else rewrote the config while it was being edited, it
        is left alone and the edited copy is kept for the user.
        """
        self.write(self.configFile, VALID)
        script = os.path.join(self.home, "racing.sh")
        self.write(
            script,
            f"""#!/bin/sh
echo "# theirs" >> "{os.path.abspath(self.configFile)}"
echo "# mine" >> "$1"
""",
            0o700,
        )
        status, _, err = self.run_("config", "edit", EDITOR=script)
        self.assertEqual(status, 1)
        self.assertEqual(self.read(self.configFile), VALID + "# theirs\n")
        [kept] = [name for name in os.listdir(self.home) if ".edit-" in name]
        self.assertIn(kept, err)
        self.assertEqual(self.read(os.path.join(self.home, kept)), VALID + "# mine\n")

    def test_keepsSymlink(self) -> None:
        real = os.path.join(self.home, "real.yaml")
        self.write(real, VALID)
        os.symlink(os.path.abspath(real), self.configFile)
        script = self.editor(VALID + "# via link\n")
        self.assertEqual(self.run_("config", "edit", EDITOR=script)[0], 0)
        self.assertTrue(os.path.islink(self.configFile))
        self.assertEqual(self.read(real), VALID + "# via link\n")


class ResetTests(CommandCase):
    def test_backup(self) -> None:
        self.write(self.configFile, VALID, 0o644)
        status, out, _ = self.run_("config", "reset")
        self.assertEqual(status, 0)
        self.assertEqual(self.read(self.configFile), template())
        self.assertEqual(self.mode(self.configFile), 0o600)
        [backup] = [name for name in os.listdir(self.home) if ".bak-" in name]
        self.assertRegex(backup, r"\Aconfig\.yaml\.bak-\d{8}-\d{6}\Z")
        backupPath = os.path.join(os.path.abspath(self.home), backup)
        self.assertEqual(self.read(backupPath), VALID)
        self.assertEqual(self.mode(backupPath), 0o600)
        self.assertIn(backupPath, out)
        self.assertIn(os.path.abspath(self.configFile), out)

    def test_twiceInOneSecond(self) -> None:
        self.write(self.configFile, VALID)
        self.run_("config", "reset")
        self.write(self.configFile, VALID + "# second\n")
        self.run_("config", "reset")
        backups = sorted(name for name in os.listdir(self.home) if ".bak-" in name)
        self.assertEqual(len(backups), 2)
        contents = {self.read(os.path.join(self.home, name)) for name in backups}
        self.assertEqual(contents, {VALID, VALID + "# second\n"})

    def test_missing(self) -> None:
        status, out, _ = self.run_("config", "reset")
        self.assertEqual(status, 0)
        self.assertEqual(self.read(self.configFile), template())
        self.assertNotIn(".bak-", out)

    def test_keepsTheToken(self) -> None:
        """
        Restoring the default keeps requiring the token when its file is
        there, so that a reset does not quietly let every local client in.
        """
        self.write(os.path.join(self.home, "token"), LOCAL_TOKEN)
        self.write(self.configFile, VALID)
        status, out, _ = self.run_("config", "reset")
        self.assertEqual(status, 0)
        self.assertEqual(self.read(self.configFile), template(withToken=True))
        self.assertIn("It requires the local token", out)


class InitTests(CommandCase):
    def test_creates(self) -> None:
        """
        S14: under C{umask 022}, C{init} makes the directory 0700 and the
        config, the token file and the mode file 0600.  The config requires
        the token in C{token}, a 256-bit random token that is never shown.
        """
        home = os.path.join(os.path.abspath(self.home), "fresh", "ccrouter")
        previous = os.umask(0o022)
        try:
            status, out, err = self.run_("init", CCROUTER_HOME=home)
        finally:
            os.umask(previous)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.mode(home), 0o700)
        config = os.path.join(home, "config.yaml")
        self.assertEqual(self.read(config), template(withToken=True))
        self.assertIn("\n  token_file: token ", self.read(config))
        self.assertEqual(self.mode(config), 0o600)
        tokenFile = os.path.join(home, "token")
        self.assertEqual(self.mode(tokenFile), 0o600)
        token = self.read(tokenFile)
        self.assertRegex(token, r"\A[A-Za-z0-9_-]{43}\n\Z")
        self.assertNotIn(token.strip(), out)
        modeFile = os.path.join(home, "mode")
        self.assertEqual(self.read(modeFile), "default\n")
        self.assertEqual(self.mode(modeFile), 0o600)
        self.assertIn("ccrouter setup claude", out)
        self.assertIn("ccrouter start", out)
        self.assertIn(f"Created {tokenFile}", out)
        # Only what init says it creates.
        self.assertEqual(sorted(os.listdir(home)), ["config.yaml", "mode", "token"])
        loaded = parseConfig(
            self.read(config), config, {}, home, lambda path: self.read(path).encode()
        )
        self.assertEqual(loaded.server.token, token.strip())
        self.assertEqual(loaded.server.tokenFile, tokenFile)

    def test_newTokenEachTime(self) -> None:
        tokens = set()
        for number in range(3):
            home = os.path.join(self.home, str(number))
            self.assertEqual(self.run_("init", CCROUTER_HOME=home)[0], 0)
            tokens.add(self.read(os.path.join(home, "token")))
        self.assertEqual(len(tokens), 3)

    def test_noToken(self) -> None:
        status, out, _ = self.run_("init", "--no-token")
        self.assertEqual(status, 0)
        self.assertEqual(self.read(self.configFile), template())
        self.assertFalse(os.path.lexists(os.path.join(self.home, "token")))
        self.assertNotIn("token", out)

    def test_keepsTheTokenFile(self) -> None:
        """
        A token file that is there is kept as it is, and used.
        """
        tokenFile = os.path.join(os.path.abspath(self.home), "token")
        self.write(tokenFile, "Mine-own-local-token-42\n")
        status, out, _ = self.run_("init")
        self.assertEqual(status, 0)
        self.assertEqual(self.read(tokenFile), "Mine-own-local-token-42\n")
        self.assertIn(f"Kept {tokenFile}", out)

    def test_createsTheTokenFileTheConfigNames(self) -> None:
        """
        For a config that names a token file that is not there, C{init}
        creates it, as it does the mode file.
        """
        self.write(self.configFile, "server: {token_file: private/cc-token}\n")
        status, out, err = self.run_("init", "--no-token")
        self.assertEqual((status, err), (0, ""))
        tokenFile = os.path.join(os.path.abspath(self.home), "private", "cc-token")
        self.assertEqual(self.mode(os.path.dirname(tokenFile)), 0o700)
        self.assertEqual(self.mode(tokenFile), 0o600)
        self.assertRegex(self.read(tokenFile), r"\A[A-Za-z0-9_-]{43}\n\Z")
        self.assertIn(f"Created {tokenFile}", out)

    def test_tokenForAnExistingConfig(self) -> None:
        """
        C{init --token} with a config that requires no token creates the
        token file and says how to require it, leaving the config alone.
        """
        self.write(self.configFile, VALID)
        status, out, _ = self.run_("init", "--token")
        self.assertEqual(status, 0)
        self.assertEqual(self.read(self.configFile), VALID)
        tokenFile = os.path.join(os.path.abspath(self.home), "token")
        self.assertEqual(self.mode(tokenFile), 0o600)
        self.assertIn(f"add 'token_file: {tokenFile}' under 'server:'", out)
        self.assertNotIn(self.read(tokenFile).strip(), out)
        # Without --token, an existing config gets no token file.
        os.unlink(tokenFile)
        self.assertEqual(self.run_("init")[0], 0)
        self.assertFalse(os.path.lexists(tokenFile))

    def test_refusesAnOpenTokenFile(self) -> None:
        """
        A token file others can read fails C{init}, as it would fail the
        daemon, and says how to fix it.
        """
        tokenFile = os.path.join(os.path.abspath(self.home), "token")
        self.write(tokenFile, "Open-local-token-for-all\n", 0o644)
        status, _, err = self.run_("init")
        self.assertEqual(status, 1)
        self.assertIn(f"run 'chmod 600 {tokenFile}'", err)
        self.assertNotIn("Open-local", err)

    def test_xdg(self) -> None:
        status, _, _ = self.run_(
            "init", CCROUTER_HOME="", XDG_CONFIG_HOME=os.path.join(self.home, "xdg")
        )
        self.assertEqual(status, 0)
        directory = os.path.join(self.home, "xdg", "ccrouter")
        self.assertEqual(self.mode(directory), 0o700)
        self.assertTrue(os.path.exists(os.path.join(directory, "config.yaml")))

    def test_neverOverwrites(self) -> None:
        self.write(self.configFile, "default_mode: b\nmodes: {a: [], b: []}\n", 0o640)
        status, out, _ = self.run_("init")
        self.assertEqual(status, 0)
        self.assertEqual(
            self.read(self.configFile), "default_mode: b\nmodes: {a: [], b: []}\n"
        )
        self.assertEqual(self.mode(self.configFile), 0o640)
        self.assertEqual(self.read(os.path.join(self.home, "mode")), "b\n")
        self.assertIn("Kept", out)
        self.write(os.path.join(self.home, "mode"), "a\n")
        status, out, _ = self.run_("init")
        self.assertEqual(status, 0)
        self.assertEqual(self.read(os.path.join(self.home, "mode")), "a\n")
        self.assertEqual(len(re.findall("Kept", out)), 3)

    def test_modeFileFromConfig(self) -> None:
        self.write(self.configFile, "mode_file: state/current\n")
        self.assertEqual(self.run_("init")[0], 0)
        self.assertEqual(
            self.read(os.path.join(self.home, "state", "current")), "default\n"
        )

    def test_invalidConfig(self) -> None:
        self.write(self.configFile, INVALID)
        status, _, err = self.run_("init")
        self.assertEqual(status, 1)
        self.assertIn("server.port", err)
        self.assertFalse(os.path.exists(os.path.join(self.home, "mode")))


class TemplateTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        The template loads as it is, with an empty environment: Anthropic
        behind 127.0.0.1:8080.
        """
        config = parseConfig(template(), "config.yaml", {})
        self.assertEqual(config.server.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(config.default.origin, "https://api.anthropic.com")
        self.assertEqual(config.routes, ())
        self.assertEqual(literalSecrets(template()), [])

    def test_examplesValid(self) -> None:
        """
        Uncommenting the examples (all but the routes, which belong in
        modes once there are modes) gives a valid config too.
        """
        lines = []
        for line in template().splitlines():
            if re.match(r"# ( *)([a-z_]+:|- )", line) or line.startswith("#   "):
                lines.append(line[2:])
            elif re.match(r"\s+# [a-z_]+:", line):
                lines.append(line.replace("# ", "", 1))
            else:
                lines.append(line)
        text = "\n".join(lines).replace("routes: []", "routes: []\n#")
        text = re.sub(r"(?m)^  - match.*\n(    .*\n)*", "", text, count=1)
        config = parseConfig(
            text,
            "c.yaml",
            {"Z_AI_API_KEY": "k"},
            "/cfg",
            lambda path: b"example-local-token-0123",
        )
        self.assertEqual(config.defaultMode, "auto")
        self.assertEqual(config.server.tokenFile, "/cfg/token")
        self.assertEqual(
            [mode.name for mode in config.modes], ["claude", "glm", "auto"]
        )
        self.assertEqual([u.name for u in config.upstreams], ["zai"])
        self.assertEqual(config.modeFile, "/cfg/mode")


class PermissionWarningTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()

    def warning(self, text: str, mode: int) -> str | None:
        with open(self.path, "w") as f:
            f.write(text)
        os.chmod(self.path, mode)
        return permissionWarning(self.path, text)

    def test_literalAndReadable(self) -> None:
        for mode in (0o644, 0o640, 0o604):
            warning = self.warning(WITH_SECRETS, mode)
            assert warning is not None
            self.assertIn(self.path, warning)
            self.assertIn("upstreams.zai.auth.value", warning)
            self.assertIn("modes.glm[1].upstream.auth.value", warning)
            self.assertNotIn("upstreams.env", warning)
            self.assertIn("chmod 600", warning)
            self.assertNotIn(CANARY[3:7], warning)

    def test_private(self) -> None:
        self.assertIsNone(self.warning(WITH_SECRETS, 0o600))
        self.assertIsNone(self.warning(WITH_SECRETS, 0o622))

    def test_onlyReferences(self) -> None:
        text = "default:\n  auth: {header: x-api-key, value: '${KEY}'}\n"
        self.assertIsNone(self.warning(text, 0o644))

    def test_missingFile(self) -> None:
        self.assertIsNone(permissionWarning(self.path + ".none", WITH_SECRETS))

    def test_literalSecrets(self) -> None:
        self.assertEqual(
            literalSecrets(
                "default:\n  auth: {header: h, value: plain}\n"
                "upstreams:\n  a:\n    auth: {header: h, value: '$${NOT_A_REF}'}\n"
                "  b:\n    auth: {header: h, value: 'Bearer ${REF}'}\n"
                "routes:\n  - upstream: {auth: {header: h, value: 12345}}\n"
            ),
            [
                "default.auth.value",
                "upstreams.a.auth.value",
                "routes[0].upstream.auth.value",
            ],
        )
        self.assertEqual(literalSecrets("a: [unclosed"), [])
        self.assertEqual(literalSecrets(""), [])
