"""Discord stand-in for end-to-end tests: ``from tests.fakes.discord_server import FakeDiscord``.

The implementation lives in the :mod:`tests.fakes.discord` package; its docstring documents
the whole test-facing API and which Discord behaviour is (and is not) implemented. This module
only re-exports it under the short name the tests use.
"""

from tests.fakes.discord import *  # noqa: F403
from tests.fakes.discord import __all__ as __all__
