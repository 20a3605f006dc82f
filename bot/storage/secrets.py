"""Keys the bot makes for itself and every process of a fleet shares, kept in `app_state`."""

from __future__ import annotations

import secrets

from bot.storage.db import Database, Tx


async def shared_secret(db: Database, name: str) -> bytes:
    """The 32-byte key called `name`: made by whichever process asks first, then read back by
    every process (so all of them tag, hash and check alike)."""

    async def key(tx: Tx) -> str:
        await tx.execute(
            "INSERT INTO app_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (name, secrets.token_hex(32)),
        )
        return str(await tx.fetch_value("SELECT value FROM app_state WHERE key = ?", (name,)))

    return bytes.fromhex(await db.run(key))
