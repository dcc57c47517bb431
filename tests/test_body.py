"""
Tests for L{ccrouter.body}: reading the top-level JSON object and splicing
the model without touching any other byte.  No reactor.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.body import parseRequestBody

CLAUDE_CODE_BODY = (
    b'{"model":"claude-haiku-4-5","messages":[{"role":"user","content":[{"type":'
    b'"text","text":"caf\xc3\xa9 \\u00e9 \\"model\\": \\"x\\"","cache_control":'
    b'{"type":"ephemeral"}}]}],"system":[{"type":"text","text":"x-anthropic-'
    b'billing-header: cc_version=2.1"}],"tools":[],"metadata":{"user_id":"{\\"'
    b'device_id\\":\\"abc\\"}"},"max_tokens":32000,"thinking":{"type":"enabled",'
    b'"budget_tokens":31999},"temperature":1.0e0,"stream":true}'
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


class ParseTests(SynchronousTestCase):
    def test_readsModelAndStream(self) -> None:
        """
        The model and the stream flag come from the top level only.
        """
        body = parseRequestBody(CLAUDE_CODE_BODY)
        assert body is not None
        self.assertEqual(body.model, "claude-haiku-4-5")
        self.assertTrue(body.streaming)

    def test_notAnObject(self) -> None:
        """
        Bodies that are not a UTF-8 JSON object give L{None}.
        """
        for raw in [
            b"",
            b"[]",
            b'"x"',
            b"{",
            b'{"model": "a"} trailing',
            b"\xff{}",
            b'{"model" "a"}',
            b'{"a":1,}',
            b"{'a': 1}",
        ]:
            self.assertIsNone(parseRequestBody(raw), raw)

    def test_deepNestingIsNotAnObject(self) -> None:
        """
        H14: nesting too deep to parse makes the body unroutable rather than
        crashing the request.
        """
        self.assertIsNone(parseRequestBody(b'{"model": "a", "x": ' + b"[" * 200_000))

    def test_modelMustBeAString(self) -> None:
        """
        H13: a model that is not a string (or is missing) makes the body
        unroutable, not an error.
        """
        body = parseRequestBody(b'{"model": 5}')
        assert body is not None
        self.assertIsNone(body.model)

    def test_lastDuplicateWins(self) -> None:
        """
        H14: like the upstream's JSON parser, the last of two C{model} keys
        counts, and that is the one a rewrite replaces.
        """
        body = parseRequestBody(b'{"model": "a", "model": "b"}')
        assert body is not None
        self.assertEqual(body.model, "b")
        self.assertEqual(body.withModel("c"), b'{"model": "a", "model": "c"}')

    def test_rewriteTouchesOnlyTheModel(self) -> None:
        """
        Rewriting the model keeps every other byte: key order, number
        formats, escapes and non-ASCII text.
        """
        body = parseRequestBody(CLAUDE_CODE_BODY)
        assert body is not None
        rewritten = body.withModel("glm-4.6")
        self.assertEqual(
            rewritten,
            CLAUDE_CODE_BODY.replace(b'"claude-haiku-4-5"', b'"glm-4.6"', 1),
        )

    def test_rewriteEscapes(self) -> None:
        """
        A replacement model name with quotes is encoded as a JSON string.
        """
        body = parseRequestBody(b'{ "model" : "a" }')
        assert body is not None
        self.assertEqual(json.loads(body.withModel('x"y')), {"model": 'x"y'})

    @given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.text())
    def test_agreesWithJson(self, document: dict[str, object], model: str) -> None:
        """
        Z2: for any object, the scan sees what C{json.loads} sees, and a rewrite
        changes exactly the model.
        """
        raw = json.dumps(document, ensure_ascii=False).encode()
        body = parseRequestBody(raw)
        assert body is not None
        self.assertEqual({k: v.value for k, v in body.fields.items()}, document)
        if "model" in document:
            expected = dict(document, model=model)
            self.assertEqual(json.loads(body.withModel(model)), expected)
