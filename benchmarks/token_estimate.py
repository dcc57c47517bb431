"""
How close ccrouter's local token estimate comes to a real Claude tokenizer.

The tokenizer of current Claude models is not public.  The closest one that
can be had offline is the one older ``anthropic`` SDKs shipped
(``anthropic/tokenizer.json`` in the 0.28.1 wheel); it needs the
``tokenizers`` package.  To run::

    pip download --no-deps anthropic==0.28.1 -d /tmp/tok
    (cd /tmp/tok && unzip -o anthropic-0.28.1-py3-none-any.whl anthropic/tokenizer.json)
    pip install tokenizers
    python benchmarks/token_estimate.py /tmp/tok/anthropic/tokenizer.json

It prints a Markdown table: characters, tokens by the tokenizer, ccrouter's
estimate and the difference, for prose, code, YAML and tool definitions
taken from this repository.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer

from ccrouter.translate.tokens import MESSAGE_OVERHEAD, estimateTokens

ROOT = Path(__file__).resolve().parent.parent


def samples() -> dict[str, str]:
    tools = [
        {
            "name": f"tool_{index}",
            "description": "Run a shell command and return its output. " * 3,
            "input_schema": {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "the command"},
                    "timeout": {"type": "number"},
                },
                "required": ["command"],
            },
        }
        for index in range(20)
    ]
    files = {
        "English prose (README.md)": "README.md",
        "Python (ccrouter/proxy.py)": "ccrouter/proxy.py",
        "Python (tests/test_failover.py)": "tests/test_failover.py",
        "YAML (config template)": "ccrouter/config-template.yaml",
    }
    texts = {name: (ROOT / path).read_text() for name, path in files.items()}
    texts["JSON tool definitions (20 tools)"] = json.dumps(tools)
    return texts


def main(tokenizerPath: str) -> None:
    tokenizer = Tokenizer.from_file(tokenizerPath)
    print("| text | characters | tokenizer | estimate | difference |")
    print("| --- | --- | --- | --- | --- |")
    for name, text in samples().items():
        estimate = estimateTokens({"messages": [{"role": "user", "content": text}]})
        estimate -= MESSAGE_OVERHEAD
        actual = len(tokenizer.encode(text).ids)
        difference = 100 * (estimate - actual) / actual
        print(f"| {name} | {len(text)} | {actual} | {estimate} | {difference:+.0f}% |")


if __name__ == "__main__":
    main(sys.argv[1])
