"""The approval queue in Discord: review messages with Approve/Reject buttons that keep
working after a restart (their custom_id carries the approval's id), and the requester's
status message that says what happened."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.community.approvals import Approval, ReviewChannelUnreachable, ReviewImage
from bot.errors import InvalidRequest
from bot.text import truncate
from cogs.background import BackgroundLoop
from cogs.buttons import PersistentButton
from cogs.checks import may_review_requests
from cogs.render import NO_PINGS, inert
from cogs.results import FriendlyModal

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

REVIEW_REFUSED_TEXT = "Only moderators (Manage Messages) can review requests."
REVIEW_IMAGES_TOO_LARGE_TEXT = (
    "Too large to post in this channel; they are sent with the request once approved."
)


def rejected_text(approval: Approval) -> str:
    if not approval.decided_by:  # nobody decided: it expired
        return f"⌛ <@{approval.user_id}>'s request: {approval.reason}"
    return f"❌ <@{approval.user_id}>'s request was not approved: {approval.reason}"


def decision_text(approval: Approval) -> str:
    if approval.state == "approved":
        return f"✅ Approved by <@{approval.decided_by}>."
    if not approval.decided_by:
        return f"⌛ {approval.reason}"
    return f"❌ Rejected by <@{approval.decided_by}>: {approval.reason}"


class ReviewButton(
    PersistentButton,
    template=r"flux:review:(?P<action>approve|reject):(?P<approval_id>[0-9a-f]{16})",
):
    def __init__(self, action: str, approval_id: str) -> None:
        approve = action == "approve"
        super().__init__(
            discord.ui.Button(
                label="Approve" if approve else "Reject",
                emoji="✅" if approve else "✖️",
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                custom_id=f"flux:review:{action}:{approval_id}",
            )
        )
        self.action = action
        self.approval_id = approval_id

    async def _run(self, interaction: discord.Interaction[Any]) -> None:
        if not may_review_requests(interaction.permissions):
            await interaction.response.send_message(REVIEW_REFUSED_TEXT, ephemeral=True)
            return
        bot: FluxcordBot = interaction.client
        approving = self.action == "approve"
        await bot.services.approvals.check_click(
            self.approval_id, interaction.user.id, interaction.guild_id, interaction.channel_id,
            approving=approving,
        )  # fmt: skip
        if not approving:
            await interaction.response.send_modal(RejectModal(self.approval_id))
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        await bot.services.approvals.approve(self.approval_id, interaction.user.id)
        await interaction.delete_original_response()


class RejectModal(FriendlyModal, title="Reject this request"):
    reason: discord.ui.TextInput[RejectModal] = discord.ui.TextInput(
        label="Reason (shown to the member)",
        style=discord.TextStyle.paragraph,
        max_length=300,
        required=False,
        custom_id="reason",
    )

    def __init__(self, approval_id: str) -> None:
        super().__init__(custom_id=f"flux:rejectmodal:{approval_id}")
        self.approval_id = approval_id

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        bot: FluxcordBot = interaction.client
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            await bot.services.approvals.check_click(
                self.approval_id, interaction.user.id, interaction.guild_id,
                interaction.channel_id, approving=False,
            )  # fmt: skip
            await bot.services.approvals.reject(
                self.approval_id, interaction.user.id, self.reason.value
            )
        except InvalidRequest as exc:
            await interaction.edit_original_response(content=str(exc))
            return
        await interaction.delete_original_response()


class DiscordApprovalView:
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot

    def _channel(self, channel_id: int, guild_id: int) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(channel_id, guild_id=guild_id)

    async def post_review(
        self, approval: Approval, images: list[ReviewImage], channel_id: int
    ) -> int:
        params = approval.params
        embed = discord.Embed(
            title="Approval needed",
            description=truncate(inert(params.prompt), 4000),
            colour=0xF1C40F,
        )
        embed.add_field(name="Requested by", value=f"<@{approval.user_id}>")
        embed.add_field(name="Model", value=approval.variant)
        embed.add_field(name="Channel", value=f"<#{approval.channel_id}>")
        if params.width and params.height:
            embed.add_field(name="Size", value=f"{params.width}×{params.height}")
        if images:
            embed.add_field(name="Reference images", value=str(len(images)))
        if approval.batch_size > 1:  # several images per prompt: each one charged
            embed.add_field(name="Images", value=str(approval.batch_size))
        view = discord.ui.View(timeout=None)
        view.add_item(ReviewButton("approve", approval.id))
        view.add_item(ReviewButton("reject", approval.id))

        async def send(with_images: bool) -> discord.Message:
            files = [discord.File(io.BytesIO(i.data), i.filename) for i in images]
            return await self.bot.poster.send(
                channel_id,
                guild_id=approval.guild_id,
                embed=embed,
                files=files if with_images else [],
                view=view,
                allowed_mentions=NO_PINGS,
            )

        try:
            try:
                message = await send(with_images=True)
            except discord.HTTPException as exc:
                if exc.status != 413 or not images:
                    raise
                # Only the files were too big for this channel (a limit below our budget):
                # the request is still reviewable without them.
                log.warning("review images of %s too large here; posting without", approval.id)
                embed.add_field(
                    name="Reference images", value=REVIEW_IMAGES_TOO_LARGE_TEXT, inline=False
                )
                message = await send(with_images=False)
        except (discord.Forbidden, discord.NotFound) as exc:
            raise ReviewChannelUnreachable(str(exc)) from exc
        return message.id

    async def show_decision(self, approval: Approval) -> None:
        if approval.review_channel_id and approval.review_message_id:
            await self._edit(
                approval, approval.review_channel_id, approval.review_message_id,
                "could not update review message of %s",
                content=decision_text(approval), view=None,
            )  # fmt: skip
        if approval.state != "approved" and approval.status_message_id:
            # Approved requests are now jobs: the engine edits the status message from here.
            await self._edit(
                approval, approval.channel_id, approval.status_message_id,
                "could not tell the requester about %s",
                content=rejected_text(approval), allowed_mentions=NO_PINGS,
            )  # fmt: skip

    async def _edit(
        self, approval: Approval, channel_id: int, message_id: int, failure: str, **changes: Any
    ) -> None:
        """Edit one of our messages about `approval`; a failure is only logged (`failure`,
        with the approval's id): the decision stands either way."""
        try:
            channel = self._channel(channel_id, approval.guild_id)
            await channel.get_partial_message(message_id).edit(**changes)
        except discord.HTTPException:
            log.warning(failure, approval.id, exc_info=True)


class Approvals(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self._sweeper = BackgroundLoop()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ReviewButton)
        self.bot.services.approvals.view = DiscordApprovalView(self.bot)
        # Expires requests nobody reviewed, also those that expired while the bot was offline.
        self._sweeper.start(self.bot.services.approvals.run(self.bot.wait_until_ready))

    async def cog_unload(self) -> None:
        await self._sweeper.stop()
        self.bot.remove_dynamic_items(ReviewButton)
        self.bot.services.approvals.view = None


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Approvals(bot))
