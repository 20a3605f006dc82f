"""Ways to ask for an image: /imagine, /flux <variant>, /edit, "Edit with FLUX", replies."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.drafts import Draft
from bot.variants import SIZE_PRESETS, Variant
from cogs.flow import (
    candidate,
    generate_from_interaction,
    generate_from_message,
    image_attachments,
    refuse_in_reply,
)
from cogs.loras import LORA_OPTION, lora_autocomplete
from cogs.options import OptionSet, variant_command
from cogs.results import EditModal, button_cooldown

if TYPE_CHECKING:
    from cogs.client import FluxcordBot

log = logging.getLogger(__name__)

IMAGINE_IMAGES = 4
EDIT_IMAGES = 8
NO_IMAGES_TEXT = "That message has no images to edit."
SLOW_DOWN_TEXT = "Slow down a little: you can ask for another image in {seconds} s."


def draft_from_options(variant: str | None, values: dict[str, Any], *, needs_edit: bool) -> Draft:
    """Map slash-command option values onto a Draft; unknown names are variant options."""
    known = {"prompt", "variant", "size", "width", "height", "seed", LORA_OPTION}
    images = [
        candidate(value)
        for name, value in values.items()
        if name.startswith("image") and isinstance(value, discord.Attachment)
    ]
    options = {
        name: value
        for name, value in values.items()
        if name not in known and not name.startswith("image") and value is not None
    }
    return Draft(
        prompt=values["prompt"],
        variant=values.get("variant") or variant,
        options=options,
        size_preset=values.get("size"),
        width=values.get("width"),
        height=values.get("height"),
        seed=values.get("seed"),
        references=images,
        needs_edit=needs_edit,
        lora=values.get(LORA_OPTION),
    )


def mentions_in_text(content: str, user_id: int) -> bool:
    """Whether the text itself mentions `user_id` (`<@id>` or the older `<@!id>`)."""
    return re.search(rf"<@!?{user_id}>", content) is not None


class Generate(commands.Cog):
    def __init__(self, bot: FluxcordBot) -> None:
        self.bot = bot
        self.flux = self._build_flux_group()
        self.imagine = self._build_imagine()
        self.edit = self._build_edit()
        self.edit_menu = app_commands.ContextMenu(name="Edit with FLUX", callback=self.edit_message)

    async def cog_load(self) -> None:
        for command in (self.imagine, self.flux, self.edit, self.edit_menu):
            self.bot.tree.add_command(command)

    async def cog_unload(self) -> None:
        for command in (self.imagine, self.flux, self.edit):
            self.bot.tree.remove_command(command.name)
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)

    # ----------------------------------------------------------------- commands
    def _pause_left(self, user_id: int) -> int:
        """Seconds the member must still wait before another request (0: go ahead, and this
        one is counted). The result buttons share the pause: one member, one pace."""
        return button_cooldown(self.bot).wait_seconds(user_id)

    async def _told_to_wait(self, interaction: discord.Interaction[Any]) -> bool:
        """True, with a private note of how long, when the member must wait before another
        request; else the request is counted against the pause."""
        wait = self._pause_left(interaction.user.id)
        if wait:
            text = SLOW_DOWN_TEXT.format(seconds=wait)
            await interaction.response.send_message(text, ephemeral=True)
        return bool(wait)

    async def _generate(self, interaction: discord.Interaction[Any], draft: Draft) -> None:
        if not await self._told_to_wait(interaction):
            await generate_from_interaction(self.bot, interaction, draft)

    def _variants(self) -> dict[str, Variant]:
        return self.bot.services.generation.variants

    def _build_imagine(self) -> app_commands.Command[Any, Any, None]:
        options = OptionSet()
        options.add(
            "prompt", app_commands.Range[str, 1, 4000], "What the image should show", required=True
        )
        choices = [
            app_commands.Choice(name=v.label, value=key) for key, v in self._variants().items()
        ]
        options.add(
            "variant", str, "Which FLUX.2 model (default: the server's)", choices=choices[:25]
        )
        options.add_size(None, dict(SIZE_PRESETS))
        options.add_seed()
        options.add_images(IMAGINE_IMAGES)

        async def handle(interaction: discord.Interaction[Any], values: dict[str, Any]) -> None:
            await self._generate(interaction, draft_from_options(None, values, needs_edit=False))

        return options.command("imagine", "Create an image with FLUX.2", handle)

    def _build_flux_group(self) -> app_commands.Group:
        group = app_commands.Group(name="flux", description="Every FLUX.2 model with its options")
        for key, variant in self._variants().items():

            async def handle(
                interaction: discord.Interaction[Any], values: dict[str, Any], key: str = key
            ) -> None:
                await self._generate(interaction, draft_from_options(key, values, needs_edit=False))

            command = variant_command(key, variant, handle)
            if variant.lora_size is not None:
                suggest = lora_autocomplete(self.bot.services.loras, variant)
                command.autocomplete(LORA_OPTION)(suggest)
            group.add_command(command)
        return group

    def _build_edit(self) -> app_commands.Command[Any, Any, None]:
        options = OptionSet()
        options.add(
            "prompt", app_commands.Range[str, 1, 4000], "How to change the image(s)", required=True
        )
        edit_variants = self.bot.services.generation.edit_variants()
        count = min(EDIT_IMAGES, max((v.max_references for v in edit_variants.values()), default=1))
        options.add_images(count, first_required=True)
        options.add(
            "variant",
            str,
            "Which FLUX.2 model (only those that can edit)",
            choices=[
                app_commands.Choice(name=v.label, value=key) for key, v in edit_variants.items()
            ][:25],
        )

        async def handle(interaction: discord.Interaction[Any], values: dict[str, Any]) -> None:
            await self._generate(interaction, draft_from_options(None, values, needs_edit=True))

        return options.command("edit", "Edit images with FLUX.2", handle)

    async def edit_message(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        if not image_attachments(message):
            await interaction.response.send_message(NO_IMAGES_TEXT, ephemeral=True)
            return
        if await self._told_to_wait(interaction):  # counted here, like the Edit button
            return
        parent = await self.bot.services.generation.job_for_message(message.id)
        await interaction.response.send_modal(EditModal(message, parent))

    # ----------------------------------------------------------------- reply-to-edit
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A reply that mentions the bot in its text edits the replied-to message's images; in
        an open studio thread, any reply with words to an image does (a shared chain, no
        mention). A reply's ping alone ("thanks!" to a result) is not a request: it puts the
        bot in `message.mentions` without the member writing the mention."""
        me = self.bot.user
        if me is None or message.author.bot or message.reference is None:
            return
        mentioned = mentions_in_text(message.content, me.id)
        if not mentioned and not self.bot.services.studios.accepts_replies(message.channel.id):
            return
        target = await self._referenced(message)
        if target is None or not self.bot.services.studios.reply_is_request(
            message.channel.id,
            mentioned=mentioned,
            has_words=bool(message.content.strip()),
            to_images=bool(image_attachments(target)),
        ):
            return
        ours = target.author.id == me.id
        references = [candidate(a, uploaded=not ours) for a in image_attachments(target)]
        references += [candidate(a) for a in image_attachments(message)]
        prompt = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        if not references:
            refuse_in_reply(self.bot, message, NO_IMAGES_TEXT)
            return
        wait = self._pause_left(message.author.id)
        if wait:
            refuse_in_reply(self.bot, message, SLOW_DOWN_TEXT.format(seconds=wait))
            return
        parent = await self.bot.services.generation.job_for_message(target.id)
        draft = Draft(
            prompt=prompt,
            references=references,
            parent_job_id=parent.id if parent else None,
            needs_edit=True,
        )
        await generate_from_message(self.bot, message, draft)

    async def _referenced(self, message: discord.Message) -> discord.Message | None:
        assert message.reference is not None
        resolved = message.reference.resolved
        if isinstance(resolved, discord.Message):
            return resolved
        if message.reference.message_id is None:
            return None
        try:
            return await message.channel.fetch_message(message.reference.message_id)
        except discord.HTTPException:
            return None


async def setup(bot: FluxcordBot) -> None:
    await bot.add_cog(Generate(bot))
