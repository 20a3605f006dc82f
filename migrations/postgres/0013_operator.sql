-- The bot's owner (bot/operator/): blocks that apply everywhere, bot-wide defaults changed
-- without a restart, and the servers that were sent the setup note on joining.

-- A user blocked from every server and direct messages by the application's owner or team.
CREATE TABLE global_blocks (
    user_id    BIGINT NOT NULL PRIMARY KEY,
    reason     TEXT NOT NULL,
    blocked_by BIGINT NOT NULL,
    at         DOUBLE PRECISION NOT NULL
);

-- A bot-wide default set by the owner, overriding the environment (the setting's name in
-- lower case, and its value as typed: validated like the environment's on every load).
CREATE TABLE bot_defaults (
    name       TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_by BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

-- Servers the setup note went to (or was claimed for): at most once per server, whatever
-- restarts, re-delivered GUILD_CREATEs or processes.
CREATE TABLE guild_welcomes (
    guild_id   BIGINT NOT NULL PRIMARY KEY,
    sent_at    DOUBLE PRECISION NOT NULL,
    channel_id BIGINT
);
