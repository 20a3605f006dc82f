"""BFL's `user` field: every request says which member asked, as an id BFL can count abuse
by but cannot turn back into a Discord account (a keyed hash). The same member has the same
id after a restart; another member has another; USER_HASH_SECRET chooses the key."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import World
from tests.fakes.discord.models import User


async def user_field_of(world: World, member: User, prompt: str) -> str:
    before = world.newest_message_id()
    await world.discord.invoke_slash(member, world.channel, "imagine", {"prompt": prompt})
    await world.result_after(before)
    [body] = [s.body for s in world.bfl.submissions if s.body and s.body["prompt"] == prompt]
    user = body["user"]
    assert isinstance(user, str)
    return user


async def tags_after_restart(world: World, **settings: Any) -> tuple[str, str, str]:
    """(alice's id, bob's id, alice's id after a restart)."""
    bot = await world.start_bot(**settings)
    alice = await user_field_of(world, world.alice, f"alice before {settings}")
    bob = await user_field_of(world, world.bob, f"bob before {settings}")
    await world.stop_bot(bot)
    await world.start_bot(**settings)
    alice_again = await user_field_of(world, world.alice, f"alice after {settings}")
    await world.stop_bot(world.bots[-1][0])
    return alice, bob, alice_again


async def test_each_member_has_one_opaque_id_that_survives_a_restart(world: World) -> None:
    alice, bob, alice_again = await tags_after_restart(world)
    assert alice == alice_again  # the key the bot made on first start is kept
    assert alice != bob
    for tag, member in ((alice, world.alice), (bob, world.bob)):
        assert len(tag) == 32 and str(member.id) not in tag

    # With USER_HASH_SECRET the ids come from that key instead (the same on any database).
    chosen = await tags_after_restart(world, user_hash_secret="a secret of the operator's")
    assert chosen[0] == chosen[2] and chosen[0] != chosen[1]
    assert chosen[0] != alice and chosen[1] != bob
