"""Start-up failures an operator must be able to act on, with the real client connected to
the Discord stand-in."""

from __future__ import annotations

import socket

import pytest

from bot.errors import StartupError
from cogs.client import FluxcordBot
from tests.e2e.conftest import World


async def test_a_port_taken_after_the_preflight_check_is_still_named(world: World) -> None:
    # `python -m bot` checks the port before connecting (tests/unit/test_startup.py); this is
    # the bind itself, for an address taken in between.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bot = FluxcordBot(world.settings(web_host="127.0.0.1", web_port=port))
        try:
            with pytest.raises(StartupError) as raised:
                await bot.start(world.discord.token)
        finally:
            await bot.close()
    assert str(raised.value) == (
        f"The web server's address 127.0.0.1:{port} is already in use by another program: "
        "set WEB_PORT (or WEB_HOST) to another address, or stop what is using it."
    )
