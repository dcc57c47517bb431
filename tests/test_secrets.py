"""
Secrets never leave where they belong (S13, S15, S16, S17): random canary
keys and tokens, in the environment, the config, client requests and
upstream answers, are looked for everywhere a real C{twistd ccrouter}
child writes or answers.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from ccrouter.hardening import configSecrets, isDumpable, makeNonDumpable
from ccrouter.logs import (
    _SECRET_SHAPES,
    FIELD_LIMIT,
    REDACTED,
    _shapeRedacted,
    escapeControls,
    loggable,
    redact,
    sanitizeEvent,
    setSecretSource,
    truncate,
)
from ccrouter.service import serverCommand, serviceEnvironment, systemdService
from tests.mockupstream import MockUpstream
from tests.proxyprocess import ProxyProcess, childEnvironment
from tests.rawclient import rawConnect
from tests.test_end_to_end import completeResponse, freePort, messageBody, parseResponse
from tests.test_logging_faults import HTTPCase, spawnTwistd, waitUntil

NOBODY = 65534


def canary(prefix: str) -> str:
    return prefix + "CANARY" + secrets.token_hex(12)


class Canaries:
    """
    One set of random secrets for a test.
    """

    def __init__(self) -> None:
        #: Claude Code's OAuth login, sent by the client to the Anthropic route.
        self.oauth = canary("sk-ant-oat01-")
        #: A client API key.
        self.clientKey = canary("sk-ant-api03-")
        #: The OpenAI-format provider's key, from the environment.
        self.openaiKey = canary("sk-proj-")
        #: The Anthropic-format provider's key, written in the config.
        self.googleKey = canary("AIza")
        #: The local token.
        self.token = "tok" + secrets.token_hex(20)
        #: A client cookie.
        self.cookie = canary("session-")
        #: In the environment and used by nothing.
        self.unused = canary("sk-")
        #: A key a client puts in the query, as Gemini's API takes it.
        self.queryKey = canary("AIza")
        #: A key-shaped value in a client header that is logged.
        self.agentKey = canary("sk-")

    @property
    def client(self) -> list[str]:
        return [self.oauth, self.clientKey, self.cookie, self.queryKey, self.agentKey]

    @property
    def all(self) -> list[str]:
        return [
            self.oauth,
            self.clientKey,
            self.openaiKey,
            self.googleKey,
            self.token,
            self.cookie,
            self.unused,
            self.queryKey,
            self.agentKey,
        ]


def credentialsSeen(request: Request) -> str:
    return " ".join(
        value.decode("latin-1")
        for name in (b"authorization", b"x-api-key", b"x-goog-api-key", b"cookie")
        for value in request.requestHeaders.getRawHeaders(name, [])
    )


def anthropicEcho(status: int) -> Any:
    """
    An Anthropic-format error that echoes the credentials it received, as
    some providers do with a key they refuse.
    """

    def behaviour(request: Request) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "type": "error",
                "error": {
                    "type": "authentication_error",
                    "message": f"invalid credentials: {credentialsSeen(request)}",
                },
            }
        ).encode()

    return behaviour


def openaiEcho(request: Request) -> bytes:
    """
    An OpenAI-format 500 whose body holds the key it received.
    """
    request.setResponseCode(500)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(
        {
            "error": {
                "message": f"internal error for key {credentialsSeen(request)}",
                "type": "server_error",
            }
        }
    ).encode()


def textEcho(request: Request) -> bytes:
    """
    A plain-text 502 that holds the key it received.
    """
    request.setResponseCode(502)
    request.setHeader(b"content-type", b"text/plain")
    return f"bad gateway; your key was {credentialsSeen(request)}".encode()


class CanaryScanTests(HTTPCase):
    def upstream(self, behaviour: Any) -> MockUpstream:
        mock = MockUpstream(behaviour)
        mock.listen()
        self.addCleanup(mock.stop)
        return mock

    async def request(
        self,
        port: int,
        model: str,
        token: str,
        target: bytes = b"/v1/messages",
        extra: bytes = b"",
    ) -> tuple[int, bytes]:
        """
        A raw request carrying every client credential.
        """
        body = messageBody(model, stream=False)
        client = await rawConnect(port)
        client.transport.write(
            b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"anthropic-version: 2023-06-01\r\n"
            b"Authorization: Bearer " + self.canaries.oauth.encode() + b"\r\n"
            b"x-api-key: " + self.canaries.clientKey.encode() + b"\r\n"
            b"Cookie: " + self.canaries.cookie.encode() + b"\r\n"
            b"x-ccrouter-token: "
            + token.encode()
            + b"\r\n"
            + extra
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        raw = await client.until(completeResponse)
        client.transport.loseConnection()
        await client.closed
        return parseResponse(raw)[0], raw

    def assertNone(self, found: list[str], where: str, text: bytes) -> None:
        leaked = [value for value in found if value.encode() in text]
        self.assertEqual(leaked, [], f"{where}: {text[:2000]!r}")

    async def test_canaryScan(self) -> None:
        """
        S13: canary secrets in the environment, the config and client
        requests, with upstreams that echo the keys they got (an Anthropic
        401, an OpenAI-format 500, a plain-text 502) and a C{?key=} in the
        URL: none reaches the log, C{/health}, an error body ccrouter sends
        (a provider's key never reaches the client, even when the provider
        echoes it), a file in the child's home, state or temporary
        directories, or an upstream it is not meant for.
        """
        canaries = self.canaries = Canaries()
        anthropicMock = self.upstream(anthropicEcho(401))
        googleMock = self.upstream(anthropicEcho(401))
        openaiMock = self.upstream(openaiEcho)
        textMock = self.upstream(textEcho)
        home = Path(self.mktemp()).absolute()
        temporary = home / "tmp"
        temporary.mkdir(parents=True)
        config = home / "config" / "config.yaml"
        config.parent.mkdir()
        config.write_text(
            f"""
server:
  token: "${{CCROUTER_TOKEN}}"
default:
  url: "{anthropicMock.url}"
upstreams:
  google:
    url: "{googleMock.url}"
    auth: {{header: x-goog-api-key, value: "{canaries.googleKey}"}}
  openai:
    url: "{openaiMock.url}/v1"
    format: openai
    auth: {{header: authorization, value: "Bearer ${{OPENAI_API_KEY}}"}}
  text:
    url: "{textMock.url}"
    auth: {{header: x-api-key, value: "${{OPENAI_API_KEY}}"}}
routes:
  - {{match: gemini, upstream: google}}
  - {{match: gpt, upstream: openai}}
  - {{match: plain, upstream: text}}
"""
        )
        config.chmod(0o600)
        port = freePort()
        child = spawnTwistd(
            self,
            [],
            ["--config", str(config), "--listen", f"tcp:{port}:interface=127.0.0.1"],
            {
                "HOME": str(home),
                "XDG_STATE_HOME": str(home / "state"),
                "XDG_CONFIG_HOME": str(home / "config"),
                "TMPDIR": str(temporary),
                "CCROUTER_TOKEN": canaries.token,
                "OPENAI_API_KEY": canaries.openaiKey,
                "UNUSED_API_SECRET": canaries.unused,
            },
        )
        url = f"http://127.0.0.1:{port}"
        await waitUntil(lambda: self.answers(f"{url}/health"), what="the proxy")

        providerKeys = [canaries.openaiKey, canaries.googleKey, canaries.unused]
        # The Anthropic route: the client's own key echoed back to it is
        # the upstream's business; provider keys and the token never.
        status, raw = await self.request(port, "claude-sonnet-4-5", canaries.token)
        self.assertEqual(status, 401)
        self.assertIn(canaries.clientKey.encode(), raw)
        self.assertNone([*providerKeys, canaries.token], "anthropic 401", raw)
        # With a key in the query, as Gemini's API takes it.
        status, raw = await self.request(
            port,
            "claude-sonnet-4-5",
            canaries.token,
            target=b"/v1/messages?beta=true&key=" + canaries.queryKey.encode(),
        )
        self.assertEqual(status, 401)
        # Provider routes: the provider's echo of ccrouter's key must not
        # reach the client.
        for model, expected in [("gemini-pro", 401), ("gpt-5", 500), ("plain-1", 502)]:
            status, raw = await self.request(port, model, canaries.token)
            self.assertEqual(status, expected, raw)
            self.assertNone(canaries.all, model, raw)
        # A wrong token, shaped like a key, is not echoed.
        wrong = canary("sk-ant-oat01-WRONG")
        status, raw = await self.request(port, "claude-sonnet-4-5", wrong)
        self.assertEqual(status, 401)
        self.assertNone([*canaries.all, wrong], "wrong token", raw)
        # A client value shaped like a key, in a header that is logged.
        status, raw = await self.request(
            port,
            "claude-sonnet-4-5",
            canaries.token,
            extra=b"User-Agent: claude-cli " + canaries.agentKey.encode() + b"\r\n",
        )
        _, health = await self.get(f"{url}/health")
        self.assertNone([*canaries.all, wrong], "/health", health)

        # No upstream gets what belongs to another.
        raw = {
            "anthropic": bytes(anthropicMock.allRaw),
            "google": bytes(googleMock.allRaw),
            "openai": bytes(openaiMock.allRaw),
            "text": bytes(textMock.allRaw),
        }
        self.assertNone(
            [canaries.openaiKey, canaries.googleKey, canaries.token, canaries.unused],
            "anthropic upstream",
            raw["anthropic"],
        )
        self.assertIn(canaries.oauth.encode(), raw["anthropic"])
        self.assertNone(
            [*canaries.client, canaries.openaiKey, canaries.token, canaries.unused],
            "google upstream",
            raw["google"],
        )
        self.assertIn(canaries.googleKey.encode(), raw["google"])
        for name in ("openai", "text"):
            self.assertNone(
                [*canaries.client, canaries.googleKey, canaries.token, canaries.unused],
                f"{name} upstream",
                raw[name],
            )
            self.assertIn(canaries.openaiKey.encode(), raw[name])

        await child.stop()
        self.assertNone([*canaries.all, wrong], "the log", child.stdout + child.stderr)
        # Every request has its line in the request log, which never holds
        # the query (where a key may be).
        self.assertGreaterEqual(child.stdout.count(b"[ccrouter.requests#info]"), 6)
        self.assertNotIn(b"key=", child.stdout)
        for path in home.rglob("*"):
            if path.is_file() and path != config:
                self.assertNone([*canaries.all, wrong], str(path), path.read_bytes())


class LogInjectionTests(HTTPCase):
    async def test_hostileValues(self) -> None:
        """
        S15: a model name and headers holding CR LF, ANSI escapes and 10 KB
        of text: each request gives exactly one request log record, on one
        line, with the control characters escaped and the model name cut
        short; no header value is logged and no forged line appears.
        """
        upstream = self.mock()
        port = freePort()
        config = self.writeConfig(f'default: {{url: "{upstream.url}"}}\n')
        process = ProxyProcess(
            ["--config", config, "--listen", f"tcp:{port}:interface=127.0.0.1"]
        )
        self.addCleanup(process.stop)
        await process.start()
        forged = "\r\n2026-01-01T00:00:00+0000 [ccrouter.proxy#info] FORGED LINE"
        ansi = "\x1b[2J\x1b[31mRED\x1b[0m"
        hostile = [
            ("model", "claude-sonnet-4-5" + forged + ansi + "M" * 10_000),
            ("user-agent", "agent" + ansi + "\x1b]0;title\x07" + "U" * 10_000),
            ("referer", "ref\u2028\u202e" + "R" * 10_000),
        ]
        for name, value in hostile:
            body = json.dumps(
                {
                    "model": value if name == "model" else "claude-sonnet-4-5",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ).encode()
            header = b""
            if name != "model":
                # A header value cannot hold CR LF on the wire; everything
                # else (ESC, BEL, Unicode separators) it can.
                header = name.encode() + b": " + value.encode() + b"\r\n"
            client = await rawConnect(port)
            client.transport.write(
                b"POST /v1/messages?"
                + b"Q" * 5000
                + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                + header
                + b"Content-Length: %d\r\n\r\n" % len(body)
                + body
            )
            await client.until(completeResponse)
            client.transport.loseConnection()
            await client.closed
        await process.stop()
        lines = process.stdout.decode("utf-8").split("\n")
        records = [line for line in lines if "[ccrouter.requests#info]" in line]
        self.assertEqual(len(records), 3, records)
        for line in lines:
            self.assertTrue(line == "" or line.startswith("20"), repr(line[:200]))
            self.assertFalse(line.startswith("2026-01-01T00:00:00"), line)
            self.assertNotIn("\x1b", line)
            self.assertNotIn("\x07", line)
            self.assertNotIn("\u2028", line)
            self.assertNotIn("\u202e", line)
            # Neither the user agent, the referer nor the query is logged.
            self.assertNotIn("UUUUUUUU", line)
            self.assertNotIn("RRRRRRRR", line)
            self.assertNotIn("QQQQQQQQ", line)
        for line in records:
            self.assertLess(len(line), 5 * FIELD_LIMIT, line)
        model = json.loads(records[0].split("] ", 1)[1])["client_model"]
        self.assertTrue(model.startswith("claude-sonnet-4-5\\x0d\\x0a2026-01"), model)
        self.assertIn("\\x1b[31mRED", model)
        self.assertLessEqual(len(model), 128)


class RedactionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.addCleanup(setSecretSource, None)

    def test_shapes(self) -> None:
        """
        S13: keys and tokens are recognised by their shape wherever they
        are in a text, and only they.
        """
        for secret, shown in [
            ("sk-ant-oat01-abcdefghijklmnop", "sk-ant-" + REDACTED),
            ("sk-proj-abcdefghijkl", "sk-" + REDACTED),
            ("AIzaSyA-abcdefghijklmnop", "AIza" + REDACTED),
            ("Bearer abc.def-ghi_jkl", "Bearer " + REDACTED),
        ]:
            self.assertEqual(redact(f"x {secret} y"), f"x {shown} y")
        self.assertEqual(
            redact("/v1/messages?beta=true&key=secret123&api_key=x&other=1"),
            f"/v1/messages?beta=true&key={REDACTED}&api_key={REDACTED}&other=1",
        )
        for harmless in [
            "task-abcdefghijk",
            "disk-usage-monitor-1",
            "claude-sonnet-4-5",
            "sk-short",
            "/v1/messages?beta=true",
        ]:
            self.assertEqual(redact(harmless), harmless)

    def test_knownValues(self) -> None:
        """
        S13: the config's secrets are redacted by value, whatever their
        shape.
        """
        setSecretSource(lambda: frozenset({"plain-token-value-123"}))
        self.assertEqual(redact("got plain-token-value-123!"), f"got {REDACTED}!")

    def test_configSecrets(self) -> None:
        """
        S13: every key a config holds, and the local token, are found;
        a C{Bearer } value is also looked for without the prefix.
        """
        from ccrouter.config import parseConfig

        config = parseConfig(
            """
server: {token: "local-token-0123456789"}
upstreams:
  a: {url: "https://a.example", auth: {header: authorization, value: "Bearer key-aaaaaaaa"}}
modes:
  one:
    - {match: x, upstream: {url: "https://b.example", auth: {header: x-api-key, value: "key-bbbbbbbb"}}}
  two: {failover: [a, one]}
""",
            "config.yaml",
            {},
        )
        self.assertEqual(
            configSecrets(config),
            {
                "local-token-0123456789",
                "Bearer key-aaaaaaaa",
                "key-aaaaaaaa",
                "key-bbbbbbbb",
            },
        )

    def test_escapeAndTruncate(self) -> None:
        """
        S15: control characters become escapes; a value longer than
        L{FIELD_LIMIT} is cut, saying how long it was.
        """
        self.assertEqual(
            escapeControls("a\r\nb\x1b[0m\u2028é"), "a\\x0d\\x0ab\\x1b[0m\\u2028é"
        )
        long = loggable("x" * 10_000)
        self.assertLessEqual(len(long), FIELD_LIMIT)
        self.assertTrue(long.endswith("... (10000 characters)"))
        event = sanitizeEvent(
            {"log_format": "{model}", "model": "m\r\nFORGED" + "x" * 1000, "n": 3}
        )
        self.assertEqual(event["n"], 3)
        self.assertEqual(event["log_format"], "{model}")
        self.assertTrue(event["model"].startswith("m\\x0d\\x0aFORGED"))
        self.assertLessEqual(len(event["model"]), FIELD_LIMIT)

    def test_rememberedValuesFollowAReload(self) -> None:
        """
        S13: a value L{loggable} has seen before is redacted again once a
        reload makes it a secret, and shown again once it stops being one.
        """
        value = "model-plain-value-42"
        self.assertEqual(loggable(value), value)
        self.assertEqual(loggable(value), value)
        secrets = frozenset({value})
        setSecretSource(lambda: secrets)
        self.assertEqual(loggable(value), REDACTED)
        self.assertEqual(loggable(value, 8), truncate(REDACTED, 8))
        setSecretSource(lambda: frozenset({"something-else-entirely"}))
        self.assertEqual(loggable(value), value)

    @given(
        st.text(max_size=300),
        st.integers(min_value=1, max_value=400),
        st.sets(st.text(min_size=6, max_size=12), max_size=3),
    )
    @settings(max_examples=300, deadline=None)
    def test_rememberedSameAsWorkedOut(
        self, value: str, limit: int, secrets: set[str]
    ) -> None:
        """
        S13: what L{loggable} remembers is what it works out: asked twice
        under the same secrets, it answers as the escape, truncation and
        redaction do.
        """
        fixed = frozenset(secrets)
        setSecretSource(lambda: fixed)
        expected = truncate(escapeControls(redact(value)), limit)
        self.assertEqual(loggable(value, limit), expected)
        self.assertEqual(loggable(value, limit), expected)


class DumpableTests(SynchronousTestCase):
    def child(self, code: str, environ: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **(environ or {})},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_nonDumpable(self) -> None:
        """
        S16: L{makeNonDumpable} clears the process's dumpable flag (asked
        back with C{PR_GET_DUMPABLE}); C{CCROUTER_DUMPABLE=1} keeps it.
        """
        if not sys.platform.startswith("linux"):
            raise self.skipTest("prctl is Linux only")
        code = (
            "import os\n"
            "from ccrouter.hardening import isDumpable, makeNonDumpable\n"
            "before = isDumpable()\n"
            "said = makeNonDumpable(os.environ)\n"
            "print(before, isDumpable(), said, sep='|')\n"
        )
        self.assertEqual(
            self.child(code).strip(), "True|False|the process is not dumpable"
        )
        self.assertEqual(
            self.child(code, {"CCROUTER_DUMPABLE": "1"}).strip(),
            "True|True|the process stays dumpable (CCROUTER_DUMPABLE is set)",
        )

    def test_elsewhere(self) -> None:
        """
        S16: where there is no prctl (not Linux), nothing happens and it
        says so.
        """
        self.patch(sys, "platform", "darwin")
        self.assertEqual(
            makeNonDumpable({}),
            "the process stays dumpable (no prctl on this system)",
        )
        self.assertIsNone(isDumpable())

    def test_prctlFails(self) -> None:
        def failing(option: int, argument: int) -> int:
            raise OSError(1, "Operation not permitted")

        self.assertEqual(
            makeNonDumpable({}, failing),
            "the process stays dumpable (prctl failed: Operation not permitted)",
        )
        self.assertTrue(isDumpable(lambda option, argument: 1))


class SameUserReadTests(HTTPCase):
    async def test_environNotReadableBySameUser(self) -> None:
        """
        S16: the proxy runs as an unprivileged user (C{nobody}) with a
        canary key in its environment; another process of that user cannot
        read its C{/proc/PID/environ} or C{/proc/PID/mem}, which now belong
        to root.  With C{CCROUTER_DUMPABLE=1} the same read succeeds and
        finds the key, which shows the check can fail.
        """
        if not sys.platform.startswith("linux"):
            raise self.skipTest("/proc and prctl are Linux only")
        if os.geteuid() != 0:
            raise self.skipTest("needs root to run the proxy as another user")
        setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        if subprocess.run([*setpriv, "true"], capture_output=True).returncode:
            raise self.skipTest("setpriv cannot switch to nobody here")
        key = canary("sk-")
        config = Path(self.writeConfig(f'default: {{url: "{self.mock().url}"}}\n'))
        config.chmod(0o644)
        config.parent.chmod(0o755)
        for dumpable, readable in [("0", False), ("1", True)]:
            port = freePort()
            child = spawnTwistd(
                self,
                [],
                [
                    "--config",
                    str(config),
                    "--listen",
                    f"tcp:{port}:interface=127.0.0.1",
                ],
                {"CANARY_API_KEY": key, "CCROUTER_DUMPABLE": dumpable, "HOME": "/"},
                prefix=setpriv,
            )
            url = f"http://127.0.0.1:{port}/health"
            await waitUntil(lambda url=url: self.answers(url), what="the proxy")
            pid = child.pid
            status = os.stat(f"/proc/{pid}/environ")
            self.assertEqual(status.st_uid, NOBODY if readable else 0)
            peek = subprocess.run(
                [
                    *setpriv,
                    sys.executable,
                    "-c",
                    "import sys\n"
                    "for name in ('environ', 'mem'):\n"
                    "    try:\n"
                    "        with open(f'/proc/{sys.argv[1]}/{name}', 'rb') as f:\n"
                    "            data = f.read(1 << 16) if name == 'environ' else b''\n"
                    "        print(name, 'read', sys.argv[2].encode() in data)\n"
                    "    except PermissionError:\n"
                    "        print(name, 'refused')\n",
                    str(pid),
                    key,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.assertEqual(
                peek.stdout.split("\n")[:2],
                (
                    ["environ read True", "mem read False"]
                    if readable
                    else ["environ refused", "mem refused"]
                ),
                peek.stderr,
            )
            await child.stop()


class ArgvTests(HTTPCase):
    async def test_noSecretInTheCommandLine(self) -> None:
        """
        S17: the daemon C{ccrouter start} runs, and the systemd unit's
        C{ExecStart}, carry no key or token on their command line, though
        the environment and the config hold them.
        """
        key, token = canary("sk-"), "tok" + secrets.token_hex(20)
        home = Path(self.mktemp()).absolute()
        home.mkdir(parents=True)
        port = freePort()
        (home / "config.yaml").write_text(
            f"server: {{port: {port}, token: '${{CCROUTER_TOKEN}}'}}\n"
            "upstreams:\n"
            f'  p: {{url: "{self.mock().url}", auth: {{header: x-api-key,'
            ' value: "${PROVIDER_API_KEY}"}}\n'
            "routes: [{match: x, upstream: p}]\n"
        )
        (home / "config.yaml").chmod(0o600)
        environ = {
            "CCROUTER_HOME": str(home),
            "HOME": str(home),
            "PROVIDER_API_KEY": key,
            "CCROUTER_TOKEN": token,
        }
        environ = childEnvironment(environ)
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-c", "from ccrouter.cli import entryPoint; entryPoint()", "start"],
            env=environ,
            reactor=reactor,
        )
        pid = int((home / "ccrouter.pid").read_text())
        self.addCleanup(
            lambda: getProcessOutputAndValue(
                sys.executable,
                ["-c", "from ccrouter.cli import entryPoint; entryPoint()", "stop"],
                env=environ,
                reactor=reactor,
            )
        )
        self.assertEqual(code, 0, out + err)
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read()
        self.assertIn(b"ccrouter", arguments)
        self.assertIn(str(home / "config.yaml").encode(), arguments)
        for secret in (key, token):
            self.assertNotIn(secret.encode(), arguments)
        # The service's unit, made from the same environment.
        unit = systemdService(
            sys.executable,
            str(home / "config.yaml"),
            serviceEnvironment(environ),
            socket=False,
        )
        self.assertIn("ExecStart=", unit)
        for secret in (key, token):
            self.assertNotIn(secret, unit)
        command = " ".join(
            serverCommand(sys.executable, str(home / "config.yaml"), False)
        )
        for secret in (key, token):
            self.assertNotIn(secret, command)


class RedactionShortcutTests(SynchronousTestCase):
    """
    L{redact} skips the secret-shape expression on text it cannot match;
    the shortcut must never skip one it would.
    """

    @settings(max_examples=2000, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    "sk-",
                    "SK-ant-",
                    "AIza",
                    "aiZA",
                    "Bearer ",
                    "bearer\t",
                    "?",
                    "&",
                    ";",
                    "=",
                    "key",
                    "TOKEN",
                    "Secret",
                    "password",
                    "sig",
                    "signature",
                    "AUTH",
                    "x_",
                    "-",
                    "abcdefgh",
                    "12345678",
                    " ",
                    "/",
                    "\u0131",
                    "\u017f",
                    "K",
                    "\u212a",
                    "é",
                    "?sig=",
                    "&x_signature=",
                    ";auth=",
                    "?api_key=",
                    "&Token=",
                    "?password=",
                    "&client_secret=",
                ]
            ),
            max_size=12,
        ).map("".join)
    )
    def test_sameAsTheExpression(self, text: str) -> None:
        self.assertEqual(redact(text), _SECRET_SHAPES.sub(_shapeRedacted, text))
