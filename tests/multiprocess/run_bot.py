"""`python -m tests.multiprocess.run_bot`: the real `python -m bot`, with discord.py pointed
at the Discord stand-in (FLUXCORD_TEST_DISCORD=http://127.0.0.1:port). Only the tests use it;
the bot itself has no such switch."""

from __future__ import annotations

import os
import sys

import yarl
from discord.asset import Asset
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.cli import main

base = os.environ["FLUXCORD_TEST_DISCORD"].rstrip("/")
Route.BASE = f"{base}/api/v10"
DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(base.replace("http://", "ws://", 1) + "/gateway/")
Asset.BASE = base

if __name__ == "__main__":
    sys.exit(main())
