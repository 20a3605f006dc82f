"""At LOG_LEVEL=DEBUG discord.py logs every request URL and every gateway event; interaction
answers go to URLs carrying the interaction's token, and INTERACTION_CREATE carries it too.
What the bot's logging set-up writes must hold no token, key or password."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bot.cli.common import configure_logging as _configure_logging
from tests.conftest import BFL_KEY
from tests.e2e.conftest import World

QUIETED = ("httpx", "aiohttp.access")


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What a handler on the root logger writes at DEBUG (an operator's log file); the
    logging set-up is put back as it was afterwards."""
    root = logging.getLogger()
    factory, level, handlers = logging.getLogRecordFactory(), root.level, list(root.handlers)
    quieted = {name: logging.getLogger(name).level for name in QUIETED}
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        logging.setLogRecordFactory(factory)
        root.setLevel(level)
        root.handlers[:] = handlers
        for name, was in quieted.items():
            logging.getLogger(name).setLevel(was)


async def test_debug_logs_of_an_interaction_hold_no_token(
    world: World, written: io.StringIO
) -> None:
    _configure_logging(world.settings(log_level="DEBUG"))  # the entry point's own set-up
    await world.start_bot(log_level="DEBUG")
    before = world.newest_message_id()
    it = await world.discord.invoke_slash(
        world.alice, world.channel, "imagine", {"prompt": "a lighthouse at dusk"}
    )
    await world.result_after(before)
    text = written.getvalue()

    # The lines are there (the answer went through the interaction's webhook URL, and the
    # gateway event was logged), with the token blanked out of them.
    assert f"/interactions/{it.id}/[redacted]/callback" in text
    assert f"/webhooks/{world.discord.application_id}/[redacted]/messages/" in text
    assert "INTERACTION_CREATE" in text and "'token': '[redacted]'" in text
    for secret in (it.token, world.discord.token, BFL_KEY):
        assert secret not in text
