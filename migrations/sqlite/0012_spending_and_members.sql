-- Who may spend the operator's money (bot/ledger/spending.py), and who may ask for images in
-- direct messages whatever process their servers are on (bot/community/direct.py).

-- The bot-wide monthly budget (BOT_MONTHLY_CREDITS) sums every server's total for the month
-- (user 0) inside each reservation: one index entry per server, not the whole table.
CREATE INDEX usage_totals_servers ON usage_totals (period, period_start) WHERE user_id = 0;

-- The owner's warnings at 80 % and 100 % of that budget: the row is claimed by whichever
-- process sees the threshold first, so each goes out once per month window.
CREATE TABLE bot_budget_alerts (
    month_start INTEGER NOT NULL,
    percent     INTEGER NOT NULL,
    used_mc     INTEGER NOT NULL,
    cap_mc      INTEGER NOT NULL,
    sent_at     REAL NOT NULL,
    PRIMARY KEY (month_start, percent)
);

-- Members known to be in a server, from every process for the servers on its own shards (a
-- member asking there, a join) and from membership lookups. Direct messages, which all come
-- to shard 0, are admitted from here; a sighting older than a day is looked up again.
CREATE TABLE server_members (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    seen_at  REAL NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE INDEX server_members_by_user ON server_members (user_id, seen_at);
