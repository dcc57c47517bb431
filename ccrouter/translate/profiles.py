# -*- test-case-name: tests.test_translate_request -*-
"""
What differs between upstreams: the quirks of OpenAI-format upstreams
(L{Profile}) and the Anthropic-only headers and fields that
Anthropic-compatible third parties reject (L{AnthropicCompat}).

Sources are cited by the keys of C{shared/reference/protocol.md} section 10
(for example C{[ISS-MAXTOK]}) or by the public thread they come from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import field, frozen

#: The ways an upstream takes Anthropic's C{thinking} (L{Profile.reasoning}).
REASONING_MODES = frozenset({"reasoning_effort", "openrouter", "deepseek"})


def _checkReasoning(instance: object, attribute: object, value: str | None) -> None:
    if value is not None and value not in REASONING_MODES:
        raise ValueError(
            f"reasoning must be one of {sorted(REASONING_MODES)} or None, not {value!r}"
        )


def _checkLimit(instance: object, attribute: object, value: int) -> None:
    if value < 16:
        raise ValueError(f"toolNameLimit must be at least 16, not {value}")


@frozen
class Profile:
    """
    The quirks of one OpenAI-format (Chat Completions) upstream.

    @ivar name: The profile's name, as configured.
    @ivar maxTokensCap: The largest output token count the upstream accepts;
        Claude Code's C{max_tokens} (32000 or 128000) is clamped to it.
        C{None} sends it unclamped.
    @ivar toolNameLimit: The longest tool name the upstream accepts; longer
        names (and names with characters outside C{[A-Za-z0-9_-]}) are
        shortened reversibly.
    @ivar reasoning: How the upstream takes Anthropic C{thinking}:
        C{"reasoning_effort"} (C{reasoning_effort: low|medium|high} from the
        budget), C{"openrouter"} (C{reasoning: {max_tokens: N}}),
        C{"deepseek"} (nothing is sent: the model thinks by itself) or
        C{None} (thinking is dropped).
    @ivar reasoningFields: The response message (and delta) fields that carry
        reasoning text, first match wins.
    @ivar usesMaxCompletionTokens: Send C{max_completion_tokens} rather than
        the deprecated C{max_tokens}.
    @ivar replaysReasoning: Send the text of earlier C{thinking} blocks back as
        C{reasoning_content} on their assistant messages (DeepSeek and Kimi
        thinking modes reject tool-call turns without it).
    @ivar streamUsage: Ask for usage in streams with C{stream_options:
        {include_usage: true}} (some servers reject C{stream_options}).
    @ivar acceptsFiles: The upstream reads PDF documents as C{file} content
        parts; otherwise a text placeholder says the document was left out.
    """

    name: str
    maxTokensCap: int | None = None
    toolNameLimit: int = field(default=64, validator=_checkLimit)
    reasoning: str | None = field(default=None, validator=_checkReasoning)
    reasoningFields: tuple[str, ...] = ("reasoning_content", "reasoning")
    usesMaxCompletionTokens: bool = False
    replaysReasoning: bool = False
    streamUsage: bool = True
    acceptsFiles: bool = False


#: Tested defaults, by name.  Only what protocol.md (or the cited public
#: source) supports is set; everything else keeps the conservative default.
PROFILES: Mapping[str, Profile] = {
    # Any Chat Completions server: no cap, thinking dropped (a server that
    # does not know reasoning_effort may reject it), both reasoning fields
    # read (protocol.md 6.3).
    "generic": Profile("generic"),
    # api.openai.com: max_tokens is deprecated and rejected by o-series
    # models (6.1 [OAI-PARAMS]); reasoning_effort (6.5); file parts for PDFs
    # (6.1 message table).
    "openai": Profile(
        "openai",
        reasoning="reasoning_effort",
        usesMaxCompletionTokens=True,
        acceptsFiles=True,
    ),
    # DeepSeek: max_tokens must be in [1, 8192] (7.1 [ISS-MAXTOK]); thinking
    # has its own switch and rejects reasoning_effort next to it (6.5
    # [ISS-DSK]); reasoning_content must be sent back after tool-call turns
    # (6.5 [ISS-DSR], pitfall P9); reasoning arrives as reasoning_content.
    "deepseek": Profile(
        "deepseek",
        maxTokensCap=8192,
        reasoning="deepseek",
        reasoningFields=("reasoning_content",),
        replaysReasoning=True,
    ),
    # OpenRouter: reasoning {max_tokens | effort} and the `reasoning` response
    # field (6.5 [OR-REASON], 6.3); it accepts PDF file parts.
    "openrouter": Profile(
        "openrouter",
        reasoning="openrouter",
        reasoningFields=("reasoning", "reasoning_content"),
        acceptsFiles=True,
    ),
    # Groq: reasoning_effort as in the OpenAI family (6.5); reasoning text in
    # `reasoning` (6.3 variations list it for OpenAI-compatible servers).
    "groq": Profile(
        "groq",
        reasoning="reasoning_effort",
        reasoningFields=("reasoning", "reasoning_content"),
    ),
    # Moonshot's OpenAI endpoint (api.moonshot.ai/v1): thinking models return
    # reasoning_content and, like DeepSeek, want it back on tool-call turns;
    # it takes max_tokens rather than max_completion_tokens (Gitlawb/openclaude
    # PR #805); its tool call ids look like `functions.Bash:0`, which
    # response.py normalises (7.3 [ISS-TOOLID]).
    "kimi": Profile(
        "kimi",
        reasoning="deepseek",
        reasoningFields=("reasoning_content", "reasoning"),
        replaysReasoning=True,
    ),
    # Ollama: reasoning in `reasoning` (6.3); thinking is a model property.
    "ollama": Profile("ollama", reasoningFields=("reasoning", "reasoning_content")),
    # vLLM: `reasoning` in recent releases, `reasoning_content` before 0.11
    # (6.3 [VLLM-REASON]); thinking is switched per model through
    # chat_template_kwargs, which a profile cannot know.
    "vllm": Profile("vllm", reasoningFields=("reasoning", "reasoning_content")),
    # LM Studio: a local OpenAI-compatible server; defaults.
    "lmstudio": Profile("lmstudio"),
}


# Anthropic-compatible third parties ----------------------------------------


@frozen
class AnthropicCompat:
    """
    What to remove from (or set on) a request before it goes to an
    Anthropic-compatible third party that rejects some Anthropic-only
    features, so that Claude Code does not walk its 400 ladder on every turn
    (C{shared/reference/claude-code.md} section 2).

    @ivar name: The profile's name.
    @ivar dropBetas: C{anthropic-beta} values to remove.  An entry matches a
        value exactly or by its family, the value without its trailing date
        (C{"context-management"} matches C{"context-management-2025-06-27"});
        C{"*"} matches every value.
    @ivar dropHeaders: Lower-case header names to remove.
    @ivar dropFields: Body fields to remove, as dotted paths: C{"a.b"} is key
        C{b} of the object under C{a}; a segment ending in C{[]} applies the
        rest of the path to each element of the list under that key
        (C{"tools[].defer_loading"}, C{"messages[].content[].cache_control"}).
    @ivar setHeaders: Headers to set, as C{(name, value)} pairs.
    """

    name: str
    dropBetas: frozenset[str] = frozenset()
    dropHeaders: frozenset[str] = frozenset()
    dropFields: tuple[str, ...] = ()
    setHeaders: tuple[tuple[str, str], ...] = ()


#: The betas Claude Code sends that only api.anthropic.com knows
#: (claude-code.md section 1 "anthropic-beta by mode" and section 3 item 3),
#: by family.
ANTHROPIC_ONLY_BETAS = frozenset(
    {
        "oauth",
        "claude-code",
        "interleaved-thinking",
        "context-management",
        "thinking-token-count",
        "advanced-tool-use",
        "thinking-display-updates",
        "extended-cache-ttl",
        "per-turn-control",
        "mid-conversation-tool-changes",
        "effort",
        "fine-grained-tool-streaming",
        "context-1m",
    }
)

#: The betas Claude Code's 400 ladder takes away (claude-code.md section 2)
#: plus the OAuth one, which means nothing to a third party's key.
_LADDER_BETAS = frozenset(
    {"thinking-token-count", "advanced-tool-use", "thinking-display-updates", "oauth"}
)

#: Cache TTLs need the extended-cache-ttl beta.
_CACHE_TTLS = (
    "system[].cache_control.ttl",
    "messages[].content[].cache_control.ttl",
    "tools[].cache_control.ttl",
)

#: The fields the 400 ladder removes (thinking.display, defer_loading) and
#: the ones claude-code.md section 3 item 3 names.
_LADDER_FIELDS = (
    "thinking.display",
    "tools[].defer_loading",
    "context_management",
    "output_config",
)

#: Tested defaults, by name.
COMPAT_PROFILES: Mapping[str, AnthropicCompat] = {
    # Z.AI (api.z.ai/api/anthropic) rejects requests carrying Claude betas
    # such as interleaved-thinking with error 1302 (NousResearch/hermes-agent
    # PR #52455): drop them all, and the fields they pair with.
    "zai": AnthropicCompat(
        "zai",
        dropBetas=frozenset({"*"}),
        dropFields=(*_LADDER_FIELDS, "tools[].eager_input_streaming", *_CACHE_TTLS),
    ),
    # Moonshot (api.moonshot.ai/anthropic) documents only model, messages,
    # system, tools, tool_choice, max_tokens, temperature and stream
    # (MoonshotAI/Kimi-K2 #129): drop the ladder's betas and fields.
    "kimi": AnthropicCompat(
        "kimi",
        dropBetas=_LADDER_BETAS | {"context-management", "effort"},
        dropFields=_LADDER_FIELDS,
    ),
    # DeepSeek (api.deepseek.com/anthropic) ignores anthropic-beta, supports
    # only output_config.effort and ignores metadata, container, top_k
    # (its "Anthropic API compatibility details" table).
    "deepseek-anthropic": AnthropicCompat(
        "deepseek-anthropic",
        dropFields=(
            "output_config.format",
            "context_management",
            "tools[].defer_loading",
            "thinking.display",
        ),
    ),
    # MiniMax (api.minimax.io/anthropic): clients strip a subset of Claude
    # betas for it (NousResearch/hermes-agent PR #52455); drop the ladder's.
    "minimax": AnthropicCompat(
        "minimax",
        dropBetas=_LADDER_BETAS | {"context-management"},
        dropFields=_LADDER_FIELDS,
    ),
    # Everything Anthropic-only that Claude Code sends.
    "strict": AnthropicCompat(
        "strict",
        dropBetas=ANTHROPIC_ONLY_BETAS,
        dropHeaders=frozenset({"anthropic-dangerous-direct-browser-access"}),
        dropFields=(
            *_LADDER_FIELDS,
            "tools[].eager_input_streaming",
            "tools[].input_examples",
            "tools[].allowed_callers",
            "tools[].strict",
            "container",
            "service_tier",
            "inference_geo",
            "mcp_servers",
            *_CACHE_TTLS,
        ),
    ),
}


_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


def betaFamily(beta: str) -> str:
    """
    C{beta} without its trailing C{-YYYY-MM-DD} (or C{-YYYYMMDD}) date.
    """
    return _DATE_SUFFIX.sub("", beta)


def _dropsBeta(beta: str, drop: frozenset[str]) -> bool:
    return "*" in drop or beta in drop or betaFamily(beta) in drop


def _withoutPath(node: Any, segments: Sequence[str]) -> Any:
    """
    C{node} without what C{segments} names; the parts of C{node} on the path
    are copied, nothing is modified in place.
    """
    if not isinstance(node, dict) or not segments:
        return node
    head, rest = segments[0], segments[1:]
    isList = head.endswith("[]")
    key = head[:-2] if isList else head
    if key not in node:
        return node
    copied = dict(node)
    if not rest:
        del copied[key]
    elif isList:
        value = node[key]
        if isinstance(value, list):
            copied[key] = [_withoutPath(item, rest) for item in value]
    else:
        copied[key] = _withoutPath(node[key], rest)
    return copied


def withoutField(body: Mapping[str, Any], path: str) -> dict[str, Any]:
    """
    A copy of C{body} without the field at the dotted C{path} (syntax as in
    L{AnthropicCompat.dropFields}).
    """
    result = _withoutPath(dict(body), path.split("."))
    assert isinstance(result, dict)
    return result


def applyCompat(
    body: Mapping[str, Any], betas: Sequence[str], compat: AnthropicCompat
) -> tuple[dict[str, Any], list[str]]:
    """
    Clean a request for an Anthropic-compatible third party.

    @param body: The request body Claude Code sent.  It is not modified.
    @param betas: The C{anthropic-beta} values, split on commas.
    @param compat: What the upstream rejects.
    @return: The cleaned body and the C{anthropic-beta} values to send.
        Headers (L{AnthropicCompat.dropHeaders}, L{AnthropicCompat.setHeaders})
        are the caller's to apply.
    """
    cleaned = dict(body)
    for path in compat.dropFields:
        cleaned = withoutField(cleaned, path)
    kept = [
        beta.strip()
        for beta in betas
        if beta.strip() and not _dropsBeta(beta.strip(), compat.dropBetas)
    ]
    return cleaned, kept
