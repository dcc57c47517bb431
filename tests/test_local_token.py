"""
The local token end to end: its file (L{ccrouter.tokenfile}), a reload
that rotates it, and C{ccrouter init} + C{ccrouter setup claude} in front
of a real C{twistd ccrouter} that refuses requests without it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from io import StringIO
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.cli import main
from ccrouter.config import MAX_TOKEN_FILE_BYTES, ConfigError
from ccrouter.live import LiveState
from ccrouter.tap import loadConfig
from ccrouter.tokenfile import createTokenFile, newToken, readTokenFile
from ccrouter.watch import POLL_INTERVAL, Watcher
from tests.proxyprocess import ProxyProcess
from tests.test_end_to_end import EndToEndCase, messageBody, parseResponse
from tests.test_end_to_end_modes import waitFor

TOKEN = "Tk7Qm2Wx9Rb4-first-CANARY"
ROTATED = "Rz5Hn8Jd3Lc6-second-CANARY"


def writePrivate(path: Path, text: str, mode: int = 0o600) -> None:
    """
    Replace C{path} whole, as a rotation would.
    """
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    temporary.chmod(mode)
    os.replace(temporary, path)


class TokenFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.directory.mkdir()
        self.path = self.directory / "token"

    def test_newToken(self) -> None:
        """
        A token is 256 random bits in URL-safe base64: 43 characters, valid
        as C{server.token}, never the same twice.
        """
        tokens = {newToken() for _ in range(100)}
        self.assertEqual(len(tokens), 100)
        for token in tokens:
            self.assertRegex(token, r"\A[A-Za-z0-9_-]{43}\Z")

    def test_create(self) -> None:
        """
        S14: under C{umask 022} the file is 0600 and a directory made for it
        0700; it is never replaced, and no temporary file is left.
        """
        path = self.directory / "new" / "deeper" / "token"
        previous = os.umask(0o022)
        try:
            self.assertTrue(createTokenFile(str(path)))
        finally:
            os.umask(previous)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        for directory in (path.parent, path.parent.parent):
            self.assertEqual(stat.S_IMODE(directory.stat().st_mode), 0o700)
        first = path.read_text()
        self.assertRegex(first, r"\A[A-Za-z0-9_-]{43}\n\Z")
        self.assertFalse(createTokenFile(str(path)))
        self.assertEqual(path.read_text(), first)
        self.assertEqual(os.listdir(path.parent), ["token"])

    def test_read(self) -> None:
        writePrivate(self.path, TOKEN + "\n")
        self.assertEqual(readTokenFile(str(self.path)), TOKEN.encode() + b"\n")

    def test_readStopsAfterTheLimit(self) -> None:
        writePrivate(self.path, "x" * (MAX_TOKEN_FILE_BYTES * 4))
        self.assertEqual(len(readTokenFile(str(self.path))), MAX_TOKEN_FILE_BYTES + 1)

    def test_openToOthers(self) -> None:
        """
        A token file others may read or write is refused, saying how to fix
        it: it would let them use the proxy, or choose its token.
        """
        for mode in (0o644, 0o640, 0o604, 0o620, 0o602):
            writePrivate(self.path, TOKEN, mode)
            with self.assertRaises(ValueError) as caught:
                readTokenFile(str(self.path))
            self.assertEqual(
                str(caught.exception),
                f"can be read or written by others (mode {mode:04o});"
                f" run 'chmod 600 {self.path}'",
            )

    def test_notARegularFile(self) -> None:
        """
        A directory or a FIFO is refused at once; reading a FIFO would
        block the daemon.
        """
        fifo = self.directory / "fifo"
        os.mkfifo(fifo, 0o600)
        for path in (fifo, self.directory):
            with self.assertRaises(ValueError) as caught:
                readTokenFile(str(path))
            self.assertEqual(str(caught.exception), "is not a regular file")

    def test_missing(self) -> None:
        with self.assertRaises(FileNotFoundError):
            readTokenFile(str(self.path))

    def test_loadConfig(self) -> None:
        """
        The daemon's loader reads the token file.
        """
        writePrivate(self.path, TOKEN + "\n")
        config = self.directory / "config.yaml"
        config.write_text("server: {token_file: token}\n")
        loaded = loadConfig(str(config), {})
        self.assertEqual(loaded.server.token, TOKEN)
        os.chmod(self.path, 0o644)
        with self.assertRaises(ConfigError) as caught:
            loadConfig(str(config), {})
        self.assertIn("chmod 600", str(caught.exception))
        self.assertNotIn(TOKEN, str(caught.exception))


class RotationTests(SynchronousTestCase):
    """
    The token file is read again on every reload: C{SIGHUP} or a change to
    the config applies a new token; a broken one keeps the old in force.
    """

    def setUp(self) -> None:
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        self.configPath = directory / "config.yaml"
        self.configPath.write_text("server: {token_file: token}\n")
        self.tokenPath = directory / "token"
        writePrivate(self.tokenPath, TOKEN + "\n")
        self.clock = Clock()
        self.live = LiveState(
            loadConfig(str(self.configPath), {}),
            now=self.clock.seconds,
            wallNow=self.clock.seconds,
            configPath=str(self.configPath),
        )
        self.watcher = Watcher(
            self.live,
            str(self.configPath),
            lambda path: loadConfig(path, {}),
            self.clock,
        )
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def test_sighup(self) -> None:
        self.assertEqual(self.live.config.server.token, TOKEN)
        writePrivate(self.tokenPath, ROTATED + "\n")
        for _ in range(4):
            self.clock.advance(POLL_INTERVAL)
        # The token file alone is not watched: a reload is asked for.
        self.assertEqual(self.live.config.server.token, TOKEN)
        self.watcher.reloadNow()
        self.assertEqual(self.live.config.server.token, ROTATED)

    def test_configChange(self) -> None:
        writePrivate(self.tokenPath, ROTATED + "\n")
        self.configPath.write_text("server: {token_file: token}\n# rotated\n")
        for _ in range(2):
            self.clock.advance(POLL_INTERVAL)
        self.assertEqual(self.live.config.server.token, ROTATED)

    def test_brokenTokenFileKeepsTheOldToken(self) -> None:
        """
        A token file that is gone, empty or open to others is a refused
        reload: the proxy never falls back to taking requests without a
        token, and the problem reported does not show the token.
        """
        for broken in ("gone", "empty", "open"):
            if broken == "gone":
                self.tokenPath.unlink()
            elif broken == "empty":
                writePrivate(self.tokenPath, "\n")
            else:
                writePrivate(self.tokenPath, ROTATED, 0o644)
            self.watcher.reloadNow()
            self.assertEqual(self.live.config.server.token, TOKEN, broken)
            reload = self.live.lastReload
            assert reload is not None and reload.error is not None
            self.assertIn("server.token_file", reload.error)
            self.assertNotIn(ROTATED, reload.error)


def run(argv: list[str], environ: dict[str, str]) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    status = main(argv, environ, out, err)
    return status, out.getvalue() + err.getvalue()


class InitSetupEndToEndTests(EndToEndCase):
    async def test_initSetupThenRequests(self) -> None:
        """
        S7, S14: C{ccrouter init} makes a 0600 token file (under C{umask
        022}) and a config that requires it, C{setup claude} gives it to
        Claude Code without printing it, and a real C{twistd ccrouter}
        refuses with 401 every request that lacks it, carries a wrong one
        (or one from another run) or carries it twice, with no upstream
        call; with the header from Claude Code's settings the request goes
        through, without the header.  A rotated token applies on
        C{SIGHUP}.  The token reaches no log line.
        """
        home = Path(self.mktemp()).absolute()
        ccrouterHome = home / "ccrouter"
        environ = {"HOME": str(home), "CCROUTER_HOME": str(ccrouterHome)}
        previous = os.umask(0o022)
        try:
            status, initOutput = run(["init"], environ)
        finally:
            os.umask(previous)
        self.assertEqual(status, 0, initOutput)
        tokenFile = ccrouterHome / "token"
        self.assertEqual(stat.S_IMODE(tokenFile.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(ccrouterHome.stat().st_mode), 0o700)
        token = tokenFile.read_text().strip()
        status, setupOutput = run(["setup", "claude"], environ)
        self.assertEqual(status, 0, setupOutput)
        self.assertNotIn(token, initOutput + setupOutput)

        settings = json.loads((home / ".claude" / "settings.json").read_text())
        name, _, value = settings["env"]["ANTHROPIC_CUSTOM_HEADERS"].partition(":")
        sent = {name.strip().encode(): value.strip().encode()}
        self.assertEqual(sent, {b"x-ccrouter-token": token.encode()})

        mock = self.upstream()
        proxy = ProxyProcess(
            [
                "--config",
                str(ccrouterHome / "config.yaml"),
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            {"CCROUTER_UPSTREAM": mock.url},
        )
        self.addCleanup(proxy.stop)
        await proxy.start()
        assert proxy.url is not None
        port = proxy.url.rsplit(":", 1)[1]

        def request(*tokens: bytes) -> bytes:
            body = messageBody("claude-sonnet-4-5", stream=False)
            lines = [
                b"POST /v1/messages?beta=true HTTP/1.1",
                b"Host: 127.0.0.1:" + port.encode(),
                b"Content-Type: application/json",
                b"x-api-key: sk-ant-api03-fake",
                b"Content-Length: " + str(len(body)).encode(),
                *(b"x-ccrouter-token: " + each for each in tokens),
            ]
            return b"\r\n".join(lines) + b"\r\n\r\n" + body

        for tokens in (
            (),
            (b"wrong-token-wrong-token-wrong",),
            (newToken().encode(),),
            (token.encode()[:-1],),
            (token.encode(), token.encode()),
        ):
            status, _, body = parseResponse(
                await self.rawRequest(proxy, request(*tokens))
            )
            self.assertEqual(status, 401, tokens)
            self.assertEqual(json.loads(body)["error"]["type"], "authentication_error")
            self.assertNotIn(token.encode(), body)
        self.assertEqual(mock.requests, [])

        status, _, _ = parseResponse(
            await self.rawRequest(proxy, request(*sent.values()))
        )
        self.assertEqual(status, 200)
        [arrived] = mock.requests
        self.assertEqual(arrived.header(b"x-ccrouter-token"), [])
        self.assertNotIn(token.encode(), mock.allRaw)

        # Rotation: a new token file and SIGHUP; setup gives Claude Code
        # the new one.
        writePrivate(tokenFile, ROTATED + "\n")
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGHUP)

        async def refusesTheOldToken() -> bool:
            raw = await self.rawRequest(proxy, request(token.encode()))
            return parseResponse(raw)[0] == 401

        await waitFor(refusesTheOldToken, what="the old token refused")
        status, _, _ = parseResponse(
            await self.rawRequest(proxy, request(ROTATED.encode()))
        )
        self.assertEqual(status, 200)
        self.assertEqual(run(["setup", "claude"], environ)[0], 0)
        settings = json.loads((home / ".claude" / "settings.json").read_text())
        self.assertEqual(
            settings["env"]["ANTHROPIC_CUSTOM_HEADERS"], f"x-ccrouter-token: {ROTATED}"
        )

        await proxy.stop()
        for secret in (token, ROTATED):
            self.assertNotIn(secret.encode(), proxy.output)
        self.assertIsNone(re.search(rb"x-ccrouter-token: \S", proxy.output))
