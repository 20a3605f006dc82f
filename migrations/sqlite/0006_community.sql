-- Community servers: moderators' settings, banned terms, strikes and blocks, the audit log,
-- the approval queue and shared creation threads ("studios").

-- One row per server that changed anything; a server without a row has the defaults.
-- List columns hold JSON arrays of ids or variant keys; NULL means "all".
CREATE TABLE guild_settings (
    guild_id INTEGER PRIMARY KEY,
    enabled_channels TEXT,
    allowed_variants TEXT,
    default_variant TEXT,
    max_megapixels REAL,
    safety_cap INTEGER,
    allow_dms INTEGER NOT NULL DEFAULT 0,
    allow_upload_edits INTEGER NOT NULL DEFAULT 1,
    audit_channel_id INTEGER,
    approval_enabled INTEGER NOT NULL DEFAULT 0,
    approval_channel_id INTEGER,
    trusted_roles TEXT,
    strike_warn INTEGER NOT NULL DEFAULT 1,
    strike_temp_block INTEGER NOT NULL DEFAULT 3,
    strike_block INTEGER NOT NULL DEFAULT 5,
    temp_block_hours REAL NOT NULL DEFAULT 24,
    updated_at REAL NOT NULL,
    updated_by INTEGER NOT NULL
);

CREATE TABLE banned_terms (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    pattern TEXT NOT NULL,
    is_regex INTEGER NOT NULL,
    added_by INTEGER NOT NULL,
    added_at REAL NOT NULL,
    UNIQUE (guild_id, pattern, is_regex)
);

-- A refused prompt; `prompt` is kept for moderators (/mod why), never shown to others.
CREATE TABLE strikes (
    id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    at REAL NOT NULL,
    term TEXT NOT NULL,
    prompt TEXT NOT NULL,
    cleared INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX strikes_by_member ON strikes (guild_id, user_id, at);

-- `until` NULL: blocked until a moderator unblocks.
CREATE TABLE blocks (
    guild_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    until REAL,
    reason TEXT NOT NULL,
    blocked_by INTEGER NOT NULL,  -- 0: the bot, after strikes
    at REAL NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    guild_id INTEGER NOT NULL,
    actor_id INTEGER NOT NULL,  -- 0: the bot itself
    action TEXT NOT NULL,
    target_id INTEGER,
    job_id TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_guild ON audit_log (guild_id, at);

-- A request waiting for a moderator. `request` is the validated request as JSON; its
-- reference images are in approval_inputs. Nothing is reserved until it is approved.
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | approved | rejected
    status_message_id INTEGER,
    review_channel_id INTEGER,
    review_message_id INTEGER,
    decided_by INTEGER,
    decided_at REAL,
    reason TEXT,
    job_id TEXT
);
CREATE INDEX approvals_pending ON approvals (guild_id) WHERE state = 'pending';

CREATE TABLE approval_inputs (
    approval_id TEXT NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (approval_id, position)
);

CREATE TABLE studios (
    thread_id INTEGER PRIMARY KEY,
    guild_id INTEGER NOT NULL,
    parent_channel_id INTEGER NOT NULL,
    starter_id INTEGER NOT NULL,
    theme TEXT NOT NULL,
    required_words TEXT NOT NULL,  -- JSON array
    ends_at REAL NOT NULL,
    budget_mc INTEGER,  -- NULL: only the server's budget applies
    state TEXT NOT NULL DEFAULT 'open',  -- open | locked | ended
    created_at REAL NOT NULL,
    gallery_message_id INTEGER
);
CREATE INDEX studios_open ON studios (ends_at) WHERE state != 'ended';
