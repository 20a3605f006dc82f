"""Small helpers shared by the fake Discord modules: ids, JSON responses, errors, constants."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import mimetypes
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# --- permission bits (values cross-checked against discord.Permissions) ---------------------
ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = 8866461766385663
#: What a fresh guild's @everyone role gets: read/send/attach/embed/react/threads/app commands.
DEFAULT_EVERYONE_PERMISSIONS = 448928271937
#: The bot's managed role: @everyone plus manage messages/threads and private threads.
DEFAULT_BOT_PERMISSIONS = 534827626049
MANAGE_THREADS = 1 << 34
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
ATTACH_FILES = 1 << 15
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
#: discord.py's ``Permissions.all_channel()``: the bits an overwrite can set, and the bits a
#: member without VIEW_CHANNEL loses in that channel.
ALL_CHANNEL_PERMISSIONS = 8555290110197585
#: Lost without SEND_MESSAGES (in threads: SEND_MESSAGES_IN_THREADS): send TTS, mention
#: @everyone, embed links, attach files (Discord's "implicit permissions").
NEEDS_SEND_PERMISSIONS = 184320
#: discord.py's ``Permissions.voice()``, which its ``TextChannel.permissions_for`` drops.
VOICE_PERMISSIONS = 321607217185536
#: Permissions in a DM with the bot (discord.py's ``Permissions._dm_permissions()``, which
#: already has the ATTACH_FILES/EMBED_LINKS/MENTION_EVERYONE/USE_EXTERNAL_EMOJIS Discord adds).
DM_PERMISSIONS = 4011158005075008

# --- gateway intents -----------------------------------------------------------------------
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT


def application_flags(privileged_intents: int) -> int:
    """The application's ``flags`` for the privileged intents it may use, as Discord reports
    them for a bot in fewer than 100 servers: the ``*_LIMITED`` bits (GATEWAY_PRESENCE_LIMITED
    1 << 13, GATEWAY_GUILD_MEMBERS_LIMITED 1 << 15, GATEWAY_MESSAGE_CONTENT_LIMITED 1 << 19)."""
    flags = 0
    if privileged_intents & INTENT_GUILD_PRESENCES:
        flags |= 1 << 13
    if privileged_intents & INTENT_GUILD_MEMBERS:
        flags |= 1 << 15
    if privileged_intents & INTENT_MESSAGE_CONTENT:
        flags |= 1 << 19
    return flags


# --- message flags / types -----------------------------------------------------------------
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15
SENDABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2
MSG_DEFAULT = 0
MSG_REPLY = 19
MSG_CHAT_INPUT_COMMAND = 20
MSG_CONTEXT_MENU_COMMAND = 23

# --- channel types -------------------------------------------------------------------------
CHANNEL_TEXT = 0
CHANNEL_DM = 1
CHANNEL_CATEGORY = 4
CHANNEL_PUBLIC_THREAD = 11
CHANNEL_PRIVATE_THREAD = 12
THREAD_TYPES = (10, CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD)

# --- interaction types ---------------------------------------------------------------------
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5
CONTEXT_GUILD = 0
CONTEXT_BOT_DM = 1

DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
#: Discord: interaction tokens are valid for 15 minutes.
INTERACTION_TOKEN_LIFETIME_S = 15 * 60.0

# --- Discord JSON error codes used by the fake ---------------------------------------------
UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_MESSAGE = 10008
INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_WEBHOOK = 10015
UNKNOWN_USER = 10013
UNKNOWN_APPLICATION = 10002
UNKNOWN_COMMAND = 10063
UNKNOWN_INTERACTION = 10062
CANNOT_SEND_EMPTY = 50006
CANNOT_EDIT_OTHERS = 50005
ALREADY_ACKNOWLEDGED = 40060
INVALID_FORM_BODY = 50035
MISSING_ACCESS = 50001
CANNOT_DM_USER = 50007
MISSING_PERMISSIONS = 50013
WRONG_CHANNEL_TYPE = 50024
THREAD_ARCHIVED = 50083
THREAD_LOCKED = 160005
REQUEST_TOO_LARGE = 40005


class SnowflakeFactory:
    """Monotonic snowflakes whose timestamp part is the current wall clock."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._last = 0

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        candidate = (ms << 22) | (next(self._counter) & 0xFFF)
        self._last = max(candidate, self._last + 1)
        return self._last

    def on_shard(self, shard_id: int, num_shards: int) -> int:
        """A fresh snowflake with ``(id >> 22) % num_shards == shard_id`` (Discord's guild ->
        shard formula): the next id, its timestamp moved up to ``num_shards - 1`` ms ahead."""
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard {shard_id} is not in range({num_shards})")
        candidate = self()
        ms = candidate >> 22
        ms += (shard_id - ms) % num_shards
        self._last = max(self._last, (ms << 22) | (candidate & 0x3FFFFF))
        return self._last


def snowflake_time(snowflake: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


class DiscordHTTPError(Exception):
    """Raised inside route handlers; rendered as Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> JSON:
        body: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class FakeNotImplemented(DiscordHTTPError):
    """A request the fake cannot honour faithfully: answered 400 and listed as unhandled."""

    def __init__(self, message: str) -> None:
        super().__init__(400, 0, f"fake Discord does not implement this: {message}")


def not_found(code: int, what: str) -> DiscordHTTPError:
    return DiscordHTTPError(404, code, f"Unknown {what}")


def form_error(path: str, message: str, code: str = "BASE_TYPE_BAD_VALUE") -> DiscordHTTPError:
    """A 400 "Invalid Form Body" error whose ``errors`` tree points at ``path`` (dot separated)."""
    tree: JSON = {"_errors": [{"code": code, "message": message}]}
    for part in reversed([p for p in path.split(".") if p]):
        tree = {part: tree}
    return DiscordHTTPError(400, INVALID_FORM_BODY, "Invalid Form Body", tree)


def json_response(
    data: Any, status: int = 200, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    # discord.py only parses bodies whose content-type is exactly "application/json".
    # Rate limit headers are added by RestApi from its RateLimiter, not here.
    return web.Response(
        body=dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def empty_response(*, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=204, headers=headers)


def guess_content_type(filename: str, data: bytes) -> str | None:
    guessed, _ = mimetypes.guess_type(filename)
    if guessed:
        return guessed
    signatures = {
        b"\x89PNG\r\n\x1a\n": "image/png",
        b"\xff\xd8\xff": "image/jpeg",
        b"GIF8": "image/gif",
        b"RIFF": "image/webp",
    }
    for magic, content_type in signatures.items():
        if data.startswith(magic):
            return content_type
    return None


def image_size(data: bytes, content_type: str | None) -> tuple[int | None, int | None]:
    """Width/height like Discord reports for images; (None, None) for anything else."""
    if not content_type or not content_type.startswith("image/"):
        return None, None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return int(width), int(height)
    except Exception:
        return None, None


#: Overwrite ``type`` values.
OVERWRITE_ROLE = 0
OVERWRITE_MEMBER = 1


def compute_permissions(
    everyone: int, role_permissions: list[int], *, is_owner: bool = False
) -> int:
    if is_owner:
        return ALL_PERMISSIONS
    value = everyone
    for perms in role_permissions:
        value |= perms
    if value & ADMINISTRATOR:
        return ALL_PERMISSIONS
    return value


def apply_overwrites(
    base: int,
    overwrites: list[tuple[int, int, int, int]],
    *,
    everyone_id: int,
    role_ids: set[int],
    user_id: int,
) -> int:
    """Discord's channel step on guild-level ``base``: the @everyone overwrite, then the union
    of the member's role overwrites (denies, then allows), then the member's own overwrite.
    ``overwrites`` are ``(id, type, allow, deny)``; administrators must not get here."""
    by_target = {(target, kind): (allow, deny) for target, kind, allow, deny in overwrites}
    allow, deny = by_target.get((everyone_id, OVERWRITE_ROLE), (0, 0))
    value = (base & ~deny) | allow
    allows = denies = 0
    for target, kind, role_allow, role_deny in overwrites:
        if kind == OVERWRITE_ROLE and target in role_ids and target != everyone_id:
            allows |= role_allow
            denies |= role_deny
    value = (value & ~denies) | allows
    allow, deny = by_target.get((user_id, OVERWRITE_MEMBER), (0, 0))
    return (value & ~deny) | allow


def apply_implicit_permissions(value: int, *, in_thread: bool) -> int:
    """What a channel's permissions imply, exactly as discord.py's ``TextChannel`` and
    ``Thread.permissions_for`` apply it (text channels also lose the voice permissions)."""
    send = SEND_MESSAGES_IN_THREADS if in_thread else SEND_MESSAGES
    if not value & send:
        value &= ~NEEDS_SEND_PERMISSIONS
    if not value & VIEW_CHANNEL:
        value &= ~ALL_CHANNEL_PERMISSIONS
    if not in_thread:
        value &= ~VOICE_PERMISSIONS
    return value
