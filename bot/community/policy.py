"""A server's rules applied to one request, before anything is reserved or sent.

The order matters to members: first whether they may ask here at all (a server the bot is
not enabled on, blocked by the bot's owner or by the server, channel, direct messages:
bot/community/direct.py), then what they asked for (variant, size, references), and only
then the prompt itself, since a banned term counts as a strike and should not be counted
for a request that would have been refused anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot.errors import InvalidRequest
from bot.ledger.spending import ServerNotAllowed
from bot.moderation.strikes import REFUSED_TEXT, Moderation, PromptRefused
from bot.operator.blocks import GlobalBlocks
from bot.servers.settings import ServerSettings, SettingsStore
from bot.variants import MEGAPIXEL, JobParams, Variant

if TYPE_CHECKING:
    from bot.community.direct import Acknowledge, DirectMessages

DMS_CLOSED_TEXT = (
    "Image generation in direct messages isn't enabled. Use me on a server, or ask its "
    "moderators to allow direct messages."
)


DIRECT_MESSAGES = 0  # the "server" direct messages are filed under (no server terms)


@dataclass(frozen=True)
class Requester:
    """Who asks, and where: everything the server's rules look at."""

    user_id: int
    guild_id: int | None
    channel_id: int
    parent_channel_id: int | None = None  # a thread's channel
    role_ids: tuple[int, ...] = ()
    is_moderator: bool = False
    age_restricted: bool = False


class CommunityPolicy:
    def __init__(
        self,
        settings: SettingsStore,
        moderation: Moderation,
        *,
        direct_messages: DirectMessages,
        server_allowed: Callable[[int | None], bool] = lambda _guild: True,
        blocked_everywhere: GlobalBlocks | None = None,
    ) -> None:
        self.settings = settings
        self.moderation = moderation
        self.direct_messages = direct_messages
        self._server_allowed = server_allowed  # ALLOWED_GUILD_IDS (QuotaPolicy.server_allowed)
        self._blocked_everywhere = blocked_everywhere  # the owner's blocks (bot/operator)

    def server(self, place: Requester) -> ServerSettings | None:
        return None if place.guild_id is None else self.settings.get(place.guild_id)

    async def admit(self, place: Requester, *, acknowledge: Acknowledge | None = None) -> None:
        """May this member ask for images here at all? Raises InvalidRequest. In direct
        messages membership may have to be looked up: `acknowledge` is awaited first."""
        if not self._server_allowed(place.guild_id):
            raise ServerNotAllowed()
        self.check_blocked_everywhere(place.user_id)  # every server, direct messages too
        server = self.server(place)
        if server is None:
            await self.direct_messages.admit(place.user_id, acknowledge=acknowledge)
            return
        # A member here may ask in direct messages (if the server allows them), from any process.
        await self.direct_messages.seen(server.guild_id, place.user_id)
        self.moderation.check_blocked(server.guild_id, place.user_id)
        channel = place.parent_channel_id or place.channel_id
        if not server.channel_enabled(channel) and not server.channel_enabled(place.channel_id):
            allowed = ", ".join(f"<#{c}>" for c in sorted(server.enabled_channels or ()))
            raise InvalidRequest(f"Images can't be made in this channel. Try {allowed}.")

    def check_blocked_everywhere(self, user_id: int) -> None:
        """The bot owner's block (bot/operator/blocks.py): raises BlockedEverywhere."""
        if self._blocked_everywhere is not None:
            self._blocked_everywhere.check(user_id)

    def default_variant(self, place: Requester) -> str | None:
        server = self.server(place)
        return None if server is None else server.default_variant

    def results_private(self, place: Requester) -> bool:
        """The moderators made results private where this member asks (see ServerSettings)."""
        server = self.server(place)
        return server is not None and server.results_private(
            place.channel_id, place.parent_channel_id
        )

    def check_variant(self, place: Requester, key: str, variant: Variant) -> None:
        server = self.server(place)
        if server is not None and not server.variant_allowed(key):
            allowed = ", ".join(sorted(server.allowed_variants or ()))
            raise InvalidRequest(
                f"{variant.label} isn't enabled on this server. Allowed here: {allowed}."
            )

    def shape(
        self, place: Requester, variant: Variant, params: JobParams, *, uploads: int
    ) -> JobParams:
        """Apply the server's caps to validated parameters (or refuse them)."""
        server = self.server(place)
        if server is None:
            return params
        if server.max_megapixels is not None and params.width and params.height:
            megapixels = params.width * params.height / MEGAPIXEL
            if megapixels > server.max_megapixels + 1e-9:
                raise InvalidRequest(
                    f"{params.width}×{params.height} is {megapixels:.2f} megapixels; this server "
                    f"allows at most {server.max_megapixels:g}. Choose a smaller size."
                )
        if uploads and not server.allow_upload_edits and not place.age_restricted:
            raise InvalidRequest(
                "On this server, uploaded images can only be edited in age-restricted channels. "
                "You can still edit images Fluxcord made."
            )
        options = dict(params.options)
        if server.safety_cap is not None and "safety_tolerance" in options:
            # What is sent is min(requested, cap): members can be stricter, never laxer.
            requested = options["safety_tolerance"]
            options["safety_tolerance"] = min(int(requested), server.safety_cap)
            return replace(params, options=options)
        return params

    async def check_prompt(self, place: Requester, prompt: str) -> None:
        """Banned terms: the server's list (a hit is a strike), or in direct messages the
        built-in list alone (no server, so no strikes)."""
        if place.guild_id is not None:
            await self.moderation.check_prompt(place.guild_id, place.user_id, prompt)
        elif await self.moderation.first_hit(DIRECT_MESSAGES, prompt) is not None:
            raise PromptRefused(REFUSED_TEXT)

    def needs_approval(self, place: Requester) -> bool:
        server = self.server(place)
        return server is not None and server.needs_approval(
            place.role_ids, is_moderator=place.is_moderator
        )
