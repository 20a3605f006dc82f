"""One job's message in Discord: where it is (the interaction's answer, or a channel
message), what it should show, and how it moves when Discord stops taking it there (see
cogs/delivery.py, which updates it)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.jobs.models import InteractionToken, Job
from bot.outbox import LatestUpdate
from bot.providers.base import OutputImage
from cogs.render import NO_PINGS

# Discord: an interaction token works for 15 minutes. A small margin keeps us from starting
# an edit that Discord would refuse half-way.
INTERACTION_TOKEN_SECONDS = 15 * 60
TOKEN_MARGIN_SECONDS = 20


def token_for(interaction: discord.Interaction[Any], now: float) -> InteractionToken:
    """The interaction's token with its lifetime, counted from when we received it (`now`,
    by the database's clock: other processes and the token sweep read it back)."""
    expires_at = now + INTERACTION_TOKEN_SECONDS - TOKEN_MARGIN_SECONDS
    return InteractionToken(interaction.token, expires_at)


@dataclass
class Shown:
    """What a job's message should show."""

    content: str
    embeds: list[discord.Embed] = field(default_factory=list)
    images: list[OutputImage] = field(default_factory=list)
    filenames: list[str] = field(default_factory=list)
    view: discord.ui.View | None = None
    mentions: discord.AllowedMentions = NO_PINGS
    # Final posts carry the job's nonce: a repeat after a crash returns the first message.
    nonce: int | None = None

    def files(self) -> list[discord.File]:
        return [
            discord.File(io.BytesIO(image.data), filename=name)
            for image, name in zip(self.images, self.filenames, strict=True)
        ]


class JobMessage:
    """One job's message: where it is and how it is updated."""

    def __init__(
        self,
        job_id: str,
        *,
        channel_id: int,
        guild_id: int | None,
        user_id: int,
        token: InteractionToken | None = None,
        interaction: discord.Interaction[Any] | None = None,
        message_id: int | None = None,
        reply_to: int | None = None,
        private: bool = False,
    ) -> None:
        self.job_id = job_id
        # Shown to its requester alone: ephemeral through the interaction, else in their DMs.
        self.private = private
        self.channel_id = channel_id
        self.guild_id = guild_id
        self.user_id = user_id
        self.token = token
        self.interaction = interaction  # live only in the process that received it
        self.message_id = message_id
        self.reply_to = reply_to
        self.left_interaction = False
        # Set once the job moved out of its (archived or locked) thread into the parent.
        self.moved_from_thread: int | None = None
        # The interaction's upload limit when we have it live (it covers DMs and boosts).
        self.upload_limit: int | None = interaction.filesize_limit if interaction else None
        self.updates: LatestUpdate[Shown, int] | None = None
        # When "generating" was last put up (cogs/delivery.py: its status text changes are
        # shown at most every STATUS_REFRESH_SECONDS).
        self.generating_shown_at: float | None = None
        self.running: Job | None = None  # the latest progress of the job while it runs
        self.progress_text: str | None = None  # the progress last put up

    @classmethod
    def of(cls, job: Job, now: float) -> JobMessage:
        """Rebuild from the stored job (after a restart, or for a job approved later);
        `now` by the database's clock, like the token's stored expiry."""
        token = job.interaction(now)
        if token is not None:
            return cls.from_job(job, token=token, message_id=job.status_message_id)
        if job.interaction_expires_at is not None:
            # It was shown through an interaction whose token is gone: reply to that message.
            message = cls.from_job(job, reply_to=job.status_message_id)
            message.left_interaction = True
            return message
        return cls.from_job(job, message_id=job.status_message_id, reply_to=job.reply_to_message_id)

    @classmethod
    def from_job(cls, job: Job, **where: Any) -> JobMessage:
        return cls(
            job.id,
            channel_id=job.channel_id,
            guild_id=job.guild_id,
            user_id=job.user_id,
            private=job.private,
            **where,
        )

    def uses_interaction(self, now: float) -> bool:
        return self.token is not None and self.token.usable(now)

    def leave_interaction(self) -> None:
        """Continue in the channel, replying to the interaction's message if there is one."""
        self.token = None
        self.interaction = None
        self.reply_to = self.message_id or self.reply_to
        self.message_id = None
        self.left_interaction = True

    def move_to_parent(self, parent_id: int) -> None:
        """The thread takes no more messages: continue as a new post in its parent."""
        self.leave_interaction()
        self.moved_from_thread = self.channel_id
        self.channel_id = parent_id
        self.reply_to = None  # a reply must be in the same channel
