"""The bot explains itself: /help (what it does, its models and their costs, editing by
reply, what is stored), /about (version, uptime, providers, docs), and the one setup note a
server gets when the bot joins it (remembered in the store: `bot.operator.welcomes`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.text import EMBED_FIELD_LIMIT, plural
from bot.variants import MEGAPIXEL, Variant
from bot.version import __version__
from cogs.render import NO_PINGS

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

PROVIDER_NAMES = {"bfl": "Black Forest Labs (BFL)", "aiml": "AI/ML API"}
WHAT_IT_DOES = (
    "I make and edit images with Black Forest Labs' FLUX.2 models. Ask with **/imagine** "
    "(the default model), **/flux <model>** (every model with all its options) or **/edit** "
    "(with images); `images: 4` makes a grid. Each result has buttons to reroll, remix, "
    "edit, zoom out, pan, make square, re-render in Hi-res, ⭐ keep or delete it. "
    "**/prefer** sets your own defaults (model, size, a prompt suffix, private results); "
    "**/favourites** lists what you kept; **/usage** shows what you have used and have left; "
    "**/history** your recent images."
)
EDIT_BY_REPLY = (
    "Reply to an image (mine or anyone's) and mention me with what to change, e.g. "
    "`@{name} make it night`. Images attached to your reply are used too, as references. "
    "Or right-click a message with images → Apps → **Edit with FLUX**."
)
STORED_ABOUT_YOU = (
    "For each request: your Discord id, the server and channel, the prompt and options, what "
    "it cost, and the result's message. Prompts are kept {prompt_days}; reference images "
    "{reference_days}, so Reroll and Remix work. A server's moderators see its requests in "
    "its audit log, and your refused prompts and blocks there, if any. If direct messages are "
    "on, the servers you were seen in are noted, to let you in. **/privacy export** sends you "
    "all of it; **/privacy delete** erases your prompts and images."
)
COST_NOTE = "Costs in credits (1 credit = $0.01), for one 1 MP image"
SETUP_NOTE = (
    "Thanks for adding **{name}**! I make images with FLUX.2. Three commands to start "
    "(for members with Manage Server):\n"
    "1. **/settings channel-add** — choose the channels where members may make images "
    "(every channel until you do).\n"
    "2. **/quota set** — set the allowance of members, roles or the whole server "
    "(**/quota show** lists them).\n"
    "3. **/imagine** — make the first image.\n"
    "**/help** explains the rest to everyone."
)


# --------------------------------------------------------------------------- text
def cost_line(key: str, variant: Variant, *, default: bool) -> str:
    """ "**pro** FLUX.2 [pro]: 3 credits, +1.5 per extra MP or reference MP" """
    pricing = variant.pricing
    first = pricing.estimate(MEGAPIXEL, [])
    line = f"**{key}** {variant.label}: {first:g} credits"
    if pricing.per_extra_mp:
        line += f", +{pricing.per_extra_mp:g} per extra or reference MP"
    return line + (" (default)" if default else "")


def packed_fields(title: str, lines: Iterable[str]) -> list[tuple[str, str]]:
    """Lines in as many embed fields as they need (each within Discord's 1024 characters):
    the first titled `title`, the others "… continued"."""
    fields: list[tuple[str, str]] = []
    current: list[str] = []
    for line in lines:
        if current and len("\n".join([*current, line])) > EMBED_FIELD_LIMIT:
            fields.append((title if not fields else f"{title} (continued)", "\n".join(current)))
            current = []
        current.append(line[:EMBED_FIELD_LIMIT])
    if current:
        fields.append((title if not fields else f"{title} (continued)", "\n".join(current)))
    return fields


def kept_for(days: float) -> str:
    """A retention setting in words (0 keeps for ever)."""
    if days <= 0:
        return "until you erase them"
    return f"for {plural(int(days), 'day')}" if days >= 1 else "for a few hours"


def help_embed(
    *,
    bot_name: str,
    variants: Mapping[str, Variant],
    default_key: str | None,
    prompt_retention_days: float,
    reference_retention_days: float,
    docs_url: str | None,
) -> discord.Embed:
    embed = discord.Embed(
        title=f"{bot_name}: FLUX.2 images",
        description=WHAT_IT_DOES,
        colour=discord.Colour.blurple(),
    )
    lines = [cost_line(key, v, default=key == default_key) for key, v in variants.items()]
    if not lines:
        lines = ["No image model is configured on this bot yet."]
    for title, value in packed_fields(COST_NOTE, lines):
        embed.add_field(name=title, value=value, inline=False)
    embed.add_field(
        name="Edit by replying", value=EDIT_BY_REPLY.format(name=bot_name), inline=False
    )
    stored = STORED_ABOUT_YOU.format(
        prompt_days=kept_for(prompt_retention_days),
        reference_days=kept_for(reference_retention_days),
    )
    embed.add_field(name="What is stored about you", value=stored, inline=False)
    if docs_url:
        embed.add_field(name="More", value=docs_url, inline=False)
    embed.set_footer(text="A server's moderators may limit models, channels and allowances.")
    return embed


def uptime_text(seconds: float) -> str:
    """ "3 days, 4 hours" / "5 minutes" / "less than a minute" """
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{plural(days, 'day')}, {plural(hours, 'hour')}"
    if hours:
        return f"{plural(hours, 'hour')}, {plural(minutes, 'minute')}"
    return plural(minutes, "minute") if minutes else "less than a minute"


def about_embed(
    *,
    bot_name: str,
    uptime_seconds: float,
    providers: Iterable[str],
    servers: int | None,
    docs_url: str | None,
) -> discord.Embed:
    embed = discord.Embed(title=f"About {bot_name}", colour=discord.Colour.blurple())
    embed.add_field(name="Version", value=f"Fluxcord {__version__}")
    embed.add_field(name="Up for", value=uptime_text(uptime_seconds))
    names = [PROVIDER_NAMES.get(name, name) for name in providers]
    embed.add_field(name="Image providers", value=", ".join(names) or "none configured")
    if servers is not None:
        embed.add_field(name="Servers", value=str(servers))
    embed.add_field(name="Documentation", value=docs_url or "Ask the bot's owner.", inline=False)
    return embed


# --------------------------------------------------------------------------- the cog
class About(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self.started = time.monotonic()

    def _name(self) -> str:
        return self.bot.user.name if self.bot.user else "Fluxcord"

    @app_commands.command(name="help", description="What this bot does, its models and costs")
    async def help(self, interaction: discord.Interaction[Any]) -> None:
        services = self.bot.services
        generation = services.generation
        default = (
            generation.offered_name(generation.pick_variant(None)) if generation.variants else None
        )
        if interaction.guild_id is not None:
            # The server's own default, if it set one the bot offers.
            own = services.server_settings.get(interaction.guild_id).default_variant
            default = own if own in generation.variants else default
        embed = help_embed(
            bot_name=self._name(),
            variants=generation.variants,
            default_key=default,
            prompt_retention_days=services.settings.prompt_retention_days,
            reference_retention_days=services.settings.reference_retention_days,
            docs_url=services.settings.docs_url,
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="about", description="Version, uptime and providers of this bot")
    async def about(self, interaction: discord.Interaction[Any]) -> None:
        services = self.bot.services
        # This process's servers: with several processes, each sees its own shards only.
        servers = len(self.bot.guilds) if not services.db.shared else None
        embed = about_embed(
            bot_name=self._name(),
            uptime_seconds=time.monotonic() - self.started,
            providers=services.providers,
            servers=servers,
            docs_url=services.settings.docs_url,
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)

    # ----------------------------------------------------------------- joining a server
    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        """One short setup note, once per server ever (not after a restart, a re-delivered
        GUILD_CREATE or in another process): in the system channel if the bot may post there,
        else the first text channel it may post in, else a direct message to the owner."""
        services = self.bot.services
        if not services.ledger.policy.server_allowed(guild.id):
            # Its members can't make images (ALLOWED_GUILD_IDS): no "try /imagine" here.
            log.info("no setup note for server %s: it is not on ALLOWED_GUILD_IDS", guild.id)
            return
        welcomes = services.welcomes
        if not await welcomes.claim(guild.id):
            return
        text = SETUP_NOTE.format(name=self._name())
        for target in self._note_targets(guild):
            try:
                if isinstance(target, discord.Object):  # the owner: a direct message
                    dm = await self.bot.create_dm(target)
                    message = await dm.send(text, allowed_mentions=NO_PINGS)
                else:  # in the channel's turn, like every post of the bot's
                    message = await self.bot.poster.send(
                        target.id, guild_id=guild.id, content=text, allowed_mentions=NO_PINGS
                    )
            except discord.HTTPException:
                continue
            await welcomes.sent(guild.id, message.channel.id)
            log.info("sent the setup note to server %s", guild.id)
            return
        await welcomes.release(guild.id)
        log.info("could not send the setup note to server %s anywhere", guild.id)

    @staticmethod
    def _note_targets(
        guild: discord.Guild,
    ) -> list[discord.TextChannel | discord.Object]:
        """The system channel, else the first text channel the bot may post in; then the
        server owner's direct messages."""
        me = guild.me
        channels = sorted(guild.text_channels, key=lambda c: (c.position, c.id))
        system = guild.system_channel
        if system is not None:
            channels = [system, *(c for c in channels if c.id != system.id)]
        targets: list[discord.TextChannel | discord.Object] = []
        usable = next(
            (c for c in channels if me is not None and c.permissions_for(me).send_messages), None
        )
        if usable is not None:
            targets.append(usable)
        if guild.owner_id is not None:
            targets.append(discord.Object(guild.owner_id))
        return targets


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(About(bot))
