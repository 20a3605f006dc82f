-- A member's own defaults (/prefer, bot/members/preferences.py): one row per member, the
-- same in every server and in direct messages (a server's rules still win at request time).
-- NULL: not set, the server's or the bot's default applies.
CREATE TABLE member_preferences (
    user_id           BIGINT NOT NULL PRIMARY KEY,
    variant           TEXT,     -- an offered variant name, e.g. "pro"
    size              TEXT,     -- a SIZE_PRESETS name, or WIDTHxHEIGHT
    prompt_suffix     TEXT,     -- appended to every new prompt
    prompt_upsampling BIGINT,   -- 0 or 1, only sent to variants that have the option
    private           BIGINT NOT NULL DEFAULT 0,  -- results shown to the member alone
    updated_at        DOUBLE PRECISION NOT NULL
);
