"""Pure Anthropic Messages <-> OpenAI Chat Completions translation."""
