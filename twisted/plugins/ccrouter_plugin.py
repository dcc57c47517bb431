"""
The C{twistd ccrouter} dropin.

Kept to one lazy L{ServiceMaker}: every C{twistd} run imports every dropin, so
nothing here may import the reactor or ccrouter itself.
"""

from twisted.application.service import ServiceMaker

ccrouter = ServiceMaker(
    "ccrouter",
    "ccrouter.tap",
    "Route Claude Code requests between LLM providers by model name.",
    "ccrouter",
)
