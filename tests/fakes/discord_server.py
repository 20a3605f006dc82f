"""Discord stand-in for end-to-end tests: ``from tests.fakes.discord_server import FakeDiscord``.

The implementation lives in the :mod:`tests.fakes.discord` package; its docstring documents
the whole test-facing API and which Discord behaviour is (and is not) implemented.
"""

from tests.fakes.discord import (
    DEFAULT_TOKEN,
    Attachment,
    Callback,
    Channel,
    FakeDiscord,
    Guild,
    InteractionHandle,
    LoggedRequest,
    Member,
    Message,
    Role,
    Upload,
    User,
)

__all__ = [
    "DEFAULT_TOKEN",
    "Attachment",
    "Callback",
    "Channel",
    "FakeDiscord",
    "Guild",
    "InteractionHandle",
    "LoggedRequest",
    "Member",
    "Message",
    "Role",
    "Upload",
    "User",
]
