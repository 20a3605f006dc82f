"""Shared by the stand-in's own tests: a discord.py client connected for one test, and a check
that nothing was left unclosed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import discord
import pytest

C = TypeVar("C", bound=discord.Client)


@asynccontextmanager
async def connected(client: C, token: str) -> AsyncIterator[C]:
    """Log `client` in, wait for its `ready` event (set in its on_ready), close it after."""
    task = asyncio.create_task(client.start(token))
    try:
        await asyncio.wait_for(client.ready.wait(), 5)  # type: ignore[attr-defined]
        yield client
    finally:
        await client.close()
        await task


async def sync_to_guild(client: Any, guild_id: int) -> None:
    """Register the client's global commands in one guild (instantly usable there)."""
    guild = discord.Object(guild_id)
    client.tree.copy_global_to(guild=guild)
    await client.tree.sync(guild=guild)


@pytest.fixture(autouse=True)
def no_leaks(recwarn: pytest.WarningsRecorder) -> Iterator[None]:
    """Autouse in every module that imports it: an unclosed session or connector fails."""
    yield
    leaks = [str(w.message) for w in recwarn if "Unclosed" in str(w.message)]
    assert not leaks, leaks
