"""
ccrouter: a local reverse proxy that routes Claude Code requests between
LLM providers by model name.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
