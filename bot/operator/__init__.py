"""What the bot's owner (the Discord application's owner or team) controls over the whole
bot, whatever server: who the owners are (`owners`), users blocked everywhere (`blocks`),
bot-wide defaults changed without a restart (`defaults`), the servers and their spend
(`servers`), and the one setup note each server gets when the bot joins (`welcomes`).
The Discord side is `cogs/owner.py` and `cogs/about.py`."""

from bot.operator.blocks import (
    BLOCKED_EVERYWHERE_TEXT,
    BlockedEverywhere,
    GlobalBlock,
    GlobalBlocks,
)
from bot.operator.defaults import EDITABLE_DEFAULTS, BotDefaults, DefaultValue
from bot.operator.owners import NOT_OWNER_TEXT, NotOwner, Owners, owner_ids
from bot.operator.servers import ServerSpend, servers_by_spend
from bot.operator.welcomes import Welcomes

__all__ = [
    "BLOCKED_EVERYWHERE_TEXT",
    "EDITABLE_DEFAULTS",
    "NOT_OWNER_TEXT",
    "BlockedEverywhere",
    "BotDefaults",
    "DefaultValue",
    "GlobalBlock",
    "GlobalBlocks",
    "NotOwner",
    "Owners",
    "ServerSpend",
    "Welcomes",
    "owner_ids",
    "servers_by_spend",
]
