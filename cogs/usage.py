"""Usage and quotas in Discord: `/usage` for everyone, `/usage-admin …` and `/quota …` for
moderators (Manage Server).

Discord hides a command from members who lack its default permissions, but a server admin
can change that in Server Settings → Integrations; so the moderator commands also check the
permission when they run. All answers are ephemeral: usage is nobody else's business.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.catalogue import CATALOGUE
from bot.ledger import (
    MILLI,
    Change,
    Limits,
    MemberUsage,
    Metric,
    Override,
    Period,
    QuotaAdmin,
    QuotaPolicy,
    Scope,
    describe_limit,
    describe_target,
    format_amount,
    parse_amount,
)
from bot.ledger.reports import ServerReport, export_csv, export_range, server_report
from bot.text import message_text, plural
from cogs.checks import server_manager_group
from cogs.moderator import answer, moderator_command, server_of
from cogs.render import NO_PINGS
from cogs.usage_chart import daily_spend_png

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

WindowName = Literal["day", "week", "month"]
KindName = Literal["images", "credits"]
WINDOW_TITLES = {Period.DAY: "Today", Period.WEEK: "This week", Period.MONTH: "This month"}


# --------------------------------------------------------------------------- permissions


MADE_BY = {"bfl": "BFL", "aiml": "AI/ML API"}


def role_ids(user: discord.abc.User) -> tuple[int, ...]:
    # The ledger adds @everyone itself; other roles only exist on a Member.
    roles = getattr(user, "roles", ())
    return tuple(role.id for role in roles if not role.is_default())


# --------------------------------------------------------------------------- text
def format_dollars(mc: int) -> str:
    """Credits as money, to the cent: 1 credit is one cent."""
    cents = round(mc / MILLI)
    return f"${cents // 100}.{cents % 100:02d}"


def _used(images: int, mc: int) -> str:
    return f"{format_amount(Metric.IMAGES, images)} · {format_amount(Metric.CREDITS, mc)}"


def _left(images: int | None, mc: int | None) -> str:
    parts = []
    if images is not None:
        parts.append(format_amount(Metric.IMAGES, images))
    if mc is not None:
        parts.append(format_amount(Metric.CREDITS, mc))
    return "no limit" if not parts else " · ".join(parts) + " left"


def usage_text(usage: MemberUsage, queued: int, running: int, *, whose: str) -> str:
    """What `/usage` shows: one line per window, then the jobs in progress."""
    lines = [f"**{whose}**"]
    for window in usage.windows:
        lines.append(
            f"**{WINDOW_TITLES[window.period]}**: {_used(window.images, window.credits_mc)}"
            f" ({format_dollars(window.credits_mc)}) — "
            f"{_left(window.remaining_images, window.remaining_mc)}"
            f" · resets <t:{window.resets_at}:R>"
        )
    jobs = f"Jobs: {queued} queued · {running} running"
    if usage.held_images or usage.held_mc:
        jobs += (
            f" (holding {format_amount(Metric.CREDITS, usage.held_mc)} until they finish;"
            " anything that fails is refunded)"
        )
    lines.append(jobs)
    return "\n".join(lines)


def server_text(report: ServerReport) -> str:
    period = report.period
    lines = [
        f"**Server usage {period.current}** (since <t:{report.start}:f>,"
        f" resets <t:{report.resets_at}:R>)",
        f"Total: {_used(report.images, report.credits_mc)}"
        f" ({format_dollars(report.credits_mc)}) — budget:"
        f" {_left(report.budget_images, report.budget_mc)}",
    ]
    if report.by_variant:
        lines.append("**By model**")
        for total in report.by_variant:
            variant = CATALOGUE.get(str(total.key))
            # Which provider made them: `pro` may be BFL's or, as its backup, the AI/ML API's.
            label = f"{variant.label}, {MADE_BY[variant.provider]}" if variant else str(total.key)
            lines.append(f"{label}: {_used(total.images, total.credits_mc)}")
    if report.by_user:
        lines.append("**By member**")
        for total in report.by_user:
            lines.append(f"<@{total.key}>: {_used(total.images, total.credits_mc)}")
    if not report.by_variant:
        lines.append(f"No images {period.current} yet.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the cog


async def _answer_with_file(
    interaction: discord.Interaction[Any], text: str, data: bytes, filename: str
) -> None:
    """The private answer to a command that deferred (building the file takes a while)."""
    await interaction.followup.send(
        text,
        file=discord.File(io.BytesIO(data), filename=filename),
        ephemeral=True,
        allowed_mentions=NO_PINGS,
    )


class Usage(commands.Cog):
    usage_admin = server_manager_group("usage-admin", "Usage reports for moderators")
    quota = server_manager_group("quota", "Change allowances on this server (moderators)")

    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    async def _member_text(
        self, guild_id: int | None, user: discord.abc.User, *, whose: str
    ) -> str:
        usage = await self.bot.services.ledger.member_usage(guild_id, user.id, role_ids(user))
        queued, running = await self.bot.services.engine.store.open_counts(guild_id, user.id)
        return usage_text(usage, queued, running, whose=whose)

    async def _change(
        self,
        interaction: discord.Interaction[Any],
        change: Callable[[QuotaAdmin, int, int], Awaitable[Change]],
    ) -> None:
        """Make a moderator's change (given the server and the moderator) and confirm it
        privately with its audited summary."""
        admin = self.bot.services.ledger.admin
        made = await change(admin, server_of(interaction), interaction.user.id)
        await answer(interaction, made.summary)

    @app_commands.command(name="usage", description="Your image allowance, spend and jobs")
    async def usage(self, interaction: discord.Interaction[Any]) -> None:
        await answer(
            interaction,
            await self._member_text(interaction.guild_id, interaction.user, whose="Your usage"),
        )

    @moderator_command(
        usage_admin,
        "user",
        "A member's allowance, spend and jobs",
        member="Whose usage to show",
    )
    async def usage_user(
        self, interaction: discord.Interaction[Any], member: discord.Member
    ) -> None:
        whose = f"Usage of {member.mention}"
        await answer(
            interaction, await self._member_text(interaction.guild_id, member, whose=whose)
        )

    @moderator_command(
        usage_admin,
        "server",
        "Server totals by model and member, chart",
        window="Which window to total (default: this month)",
    )
    async def usage_server(
        self, interaction: discord.Interaction[Any], window: WindowName = "month"
    ) -> None:
        guild_id = server_of(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await server_report(self.bot.services.ledger, guild_id, Period(window))
        chart = daily_spend_png(report.daily, f"Daily spend, last {len(report.daily)} days")
        await _answer_with_file(interaction, server_text(report), chart, "daily-spend.png")

    @moderator_command(
        usage_admin,
        "export",
        "The ledger as a CSV file",
        start="First day, YYYY-MM-DD (UTC; default: the 1st of the month)",
        end="Last day, YYYY-MM-DD (UTC; default: today)",
    )
    async def usage_export(
        self,
        interaction: discord.Interaction[Any],
        start: str | None = None,
        end: str | None = None,
    ) -> None:
        guild_id = server_of(interaction)
        first, last = export_range(start, end, self.bot.services.ledger.now())
        await interaction.response.defer(ephemeral=True, thinking=True)
        export = await export_csv(self.bot.services.ledger, guild_id, first, last)
        text = f"Ledger from {first} to {last} (UTC): {plural(export.rows, 'job')}."
        await _answer_with_file(interaction, text, export.data, export.filename)

    @moderator_command(
        quota,
        "set",
        "Set an allowance for a member, a role or the server",
        window="The window the limit covers",
        kind="Count images or credits (1 credit = $0.01)",
        amount="The limit; -1 for unlimited",
        target="A member or a role; leave empty for the whole server's budget",
    )
    async def quota_set(
        self,
        interaction: discord.Interaction[Any],
        window: WindowName,
        kind: KindName,
        amount: app_commands.Range[float, -1.0, 1e9],
        target: discord.Member | discord.User | discord.Role | None = None,
    ) -> None:
        metric = Metric(kind)
        limit = parse_amount(metric, amount)
        await self._change(
            interaction,
            lambda admin, guild_id, actor_id: admin.set_limit(
                guild_id, actor_id, *_scope(target, guild_id), Period(window), metric, limit
            ),
        )

    @moderator_command(
        quota,
        "grant",
        "Give a member extra allowance for this window",
        member="Who gets the extra",
        kind="Images or credits",
        amount="How many more",
        window="Which window (default: today)",
    )
    async def quota_grant(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member,
        kind: KindName,
        amount: app_commands.Range[float, 0.0, 1e9],
        window: WindowName = "day",
    ) -> None:
        metric = Metric(kind)
        extra = parse_amount(metric, amount)
        assert extra is not None  # the option's minimum is 0, so never -1 (unlimited)
        await self._change(
            interaction,
            lambda admin, guild_id, actor_id: admin.grant(
                guild_id, actor_id, member.id, Period(window), metric, extra
            ),
        )

    @moderator_command(
        quota,
        "reset",
        "Put a member, a role or the server back on defaults",
        target="A member or a role; leave empty for the server's budget",
    )
    async def quota_reset(
        self,
        interaction: discord.Interaction[Any],
        target: discord.Member | discord.User | discord.Role | None = None,
    ) -> None:
        await self._change(
            interaction,
            lambda admin, guild_id, actor_id: admin.reset(
                guild_id, actor_id, *_scope(target, guild_id)
            ),
        )

    @moderator_command(quota, "show", "This server's allowances and recent changes")
    async def quota_show(self, interaction: discord.Interaction[Any]) -> None:
        guild_id = server_of(interaction)
        ledger = self.bot.services.ledger
        overrides = await ledger.admin.overrides(guild_id)
        changes = await ledger.admin.history(guild_id, limit=5)
        await answer(
            interaction, message_text(quota_text(ledger.policy, guild_id, overrides, changes))
        )


def quota_text(
    policy: QuotaPolicy, guild_id: int, overrides: Sequence[Override], changes: Sequence[Change]
) -> str:
    """What `/quota show` lists: the defaults, the overrides and the latest changes."""
    lines = [
        f"**Allowances** (windows reset at {policy.schedule.describe()}; weeks start on Monday)",
        f"Default per member: {_limits_line(policy.user)}",
        f"Default server budget: {_limits_line(policy.guild)}",
    ]
    lines.append("**Overrides**" if overrides else "No overrides: the defaults apply.")
    for item in overrides:
        who = describe_target(item.scope, item.target_id, guild_id)
        lines.append(
            f"{who}: {item.period.adjective} {item.metric.value} →"
            f" {describe_limit(item.metric, item.amount)}"
        )
    if changes:
        lines.append("**Recent changes**")
        for change in changes:
            lines.append(f"<t:{int(change.at)}:R> <@{change.actor_id}>: {change.summary}")
    return "\n".join(lines)


def _scope(
    target: discord.Member | discord.User | discord.Role | None, guild_id: int
) -> tuple[Scope, int]:
    if target is None:
        return Scope.GUILD, guild_id
    if isinstance(target, discord.Role):
        return Scope.ROLE, target.id
    return Scope.USER, target.id


def _limits_line(limits: Limits) -> str:
    parts = [
        f"{format_amount(metric, amount)} a {period.value}"
        for (period, metric), amount in limits.items()
        if amount is not None
    ]
    return " · ".join(parts) if parts else "unlimited"


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Usage(bot))
