-- Usage accounting and quotas (bot/ledger). Amounts of credits are integer millicredits
-- (1 credit = 1000 mc = $0.01), so sums are exact; images are whole numbers.
-- `guild_id` 0 stands for direct messages (no server).

-- One row per job that reserved allowance. While the job runs it counts its reservation
-- (the estimate); once settled it counts what was charged (0 when refunded). There is no
-- foreign key to `jobs`: this is the money journal and must outlive any pruning of jobs.
CREATE TABLE ledger (
    job_id          TEXT PRIMARY KEY,
    guild_id        BIGINT NOT NULL,
    user_id         BIGINT NOT NULL,
    variant         TEXT NOT NULL,
    reserved_at     DOUBLE PRECISION NOT NULL,
    -- The windows the job counts in, fixed at reservation: settling adjusts exactly these
    -- totals even if the reset time setting changed in between.
    day_start       BIGINT NOT NULL,
    week_start      BIGINT NOT NULL,
    month_start     BIGINT NOT NULL,
    reserved_mc     BIGINT NOT NULL CHECK (reserved_mc >= 0),
    reserved_images BIGINT NOT NULL CHECK (reserved_images >= 0),
    status          TEXT NOT NULL DEFAULT 'reserved'
                        CHECK (status IN ('reserved', 'charged', 'refunded')),
    charged_mc      BIGINT,
    charged_images  BIGINT,
    -- What the row counts now: the reservation, then the charge (0 after a refund).
    credits_mc      BIGINT NOT NULL,
    images          BIGINT NOT NULL,
    settled_at      DOUBLE PRECISION,
    settled_by      TEXT  -- the job state that settled it: ready, delivered, failed, ...
);

CREATE INDEX ledger_by_guild_time ON ledger (guild_id, reserved_at);
CREATE INDEX ledger_by_user_time ON ledger (guild_id, user_id, reserved_at);
CREATE INDEX ledger_open ON ledger (guild_id, user_id) WHERE status = 'reserved';

-- Running totals per window, so a reservation reads six rows instead of summing a month
-- of ledger. user_id 0 = the whole server. Only the triggers below write them: they run
-- inside the statement that changes `ledger`, so the two can never disagree.
CREATE TABLE usage_totals (
    guild_id     BIGINT NOT NULL,
    user_id      BIGINT NOT NULL,
    period       TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    period_start BIGINT NOT NULL,
    credits_mc   BIGINT NOT NULL DEFAULT 0,
    images       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, user_id, period, period_start)
);

CREATE FUNCTION ledger_counts_reservation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_totals (guild_id, user_id, period, period_start, credits_mc, images)
    VALUES (NEW.guild_id, NEW.user_id, 'day', NEW.day_start, NEW.credits_mc, NEW.images),
           (NEW.guild_id, NEW.user_id, 'week', NEW.week_start, NEW.credits_mc, NEW.images),
           (NEW.guild_id, NEW.user_id, 'month', NEW.month_start, NEW.credits_mc, NEW.images),
           (NEW.guild_id, 0, 'day', NEW.day_start, NEW.credits_mc, NEW.images),
           (NEW.guild_id, 0, 'week', NEW.week_start, NEW.credits_mc, NEW.images),
           (NEW.guild_id, 0, 'month', NEW.month_start, NEW.credits_mc, NEW.images)
    ON CONFLICT (guild_id, user_id, period, period_start) DO UPDATE
    SET credits_mc = usage_totals.credits_mc + excluded.credits_mc,
        images = usage_totals.images + excluded.images;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_counts_reservation AFTER INSERT ON ledger
FOR EACH ROW EXECUTE FUNCTION ledger_counts_reservation();

-- A settlement moves the difference into the six windows the reservation counted in. One
-- row at a time, in the order the reservation wrote them: concurrent reservations and
-- settlements then lock the rows they share in one order and can never deadlock.
CREATE FUNCTION ledger_counts_settlement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE usage_totals
    SET credits_mc = credits_mc + NEW.credits_mc - OLD.credits_mc,
        images = images + NEW.images - OLD.images
    WHERE guild_id = OLD.guild_id AND user_id = OLD.user_id
      AND period = 'day' AND period_start = OLD.day_start;
    UPDATE usage_totals
    SET credits_mc = credits_mc + NEW.credits_mc - OLD.credits_mc,
        images = images + NEW.images - OLD.images
    WHERE guild_id = OLD.guild_id AND user_id = OLD.user_id
      AND period = 'week' AND period_start = OLD.week_start;
    UPDATE usage_totals
    SET credits_mc = credits_mc + NEW.credits_mc - OLD.credits_mc,
        images = images + NEW.images - OLD.images
    WHERE guild_id = OLD.guild_id AND user_id = OLD.user_id
      AND period = 'month' AND period_start = OLD.month_start;
    UPDATE usage_totals
    SET credits_mc = credits_mc + NEW.credits_mc - OLD.credits_mc,
        images = images + NEW.images - OLD.images
    WHERE guild_id = OLD.guild_id AND user_id = 0
      AND period = 'day' AND period_start = OLD.day_start;
    UPDATE usage_totals
    SET credits_mc = credits_mc + NEW.credits_mc - OLD.credits_mc,
        images = images + NEW.images - OLD.images
    WHERE guild_id = OLD.guild_id AND user_id = 0
      AND period = 'week' AND period_start = OLD.week_start;
    UPDATE usage_totals
    SET credits_mc = credits_mc + NEW.credits_mc - OLD.credits_mc,
        images = images + NEW.images - OLD.images
    WHERE guild_id = OLD.guild_id AND user_id = 0
      AND period = 'month' AND period_start = OLD.month_start;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_counts_settlement AFTER UPDATE OF credits_mc, images ON ledger
FOR EACH ROW
WHEN (NEW.credits_mc IS DISTINCT FROM OLD.credits_mc OR NEW.images IS DISTINCT FROM OLD.images)
EXECUTE FUNCTION ledger_counts_settlement();

CREATE TABLE quota_limits (
    guild_id   BIGINT NOT NULL,
    scope      TEXT NOT NULL CHECK (scope IN ('user', 'role', 'guild')),
    target_id  BIGINT NOT NULL,  -- user id, role id, or the guild id for scope 'guild'
    period     TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    metric     TEXT NOT NULL CHECK (metric IN ('images', 'credits')),
    amount     BIGINT CHECK (amount IS NULL OR amount >= 0),
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by BIGINT NOT NULL,
    PRIMARY KEY (guild_id, scope, target_id, period, metric)
);

-- Extra allowance for one member in one window (e.g. 5 more images today).
CREATE TABLE quota_grants (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    guild_id     BIGINT NOT NULL,
    user_id      BIGINT NOT NULL,
    period       TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    period_start BIGINT NOT NULL,
    metric       TEXT NOT NULL CHECK (metric IN ('images', 'credits')),
    amount       BIGINT NOT NULL CHECK (amount > 0),
    granted_at   DOUBLE PRECISION NOT NULL,
    granted_by   BIGINT NOT NULL
);

CREATE INDEX quota_grants_lookup ON quota_grants (guild_id, user_id, period, period_start);

-- Every moderator change: who, when, what it was before and after.
CREATE TABLE quota_audit (
    id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at        DOUBLE PRECISION NOT NULL,
    guild_id  BIGINT NOT NULL,
    actor_id  BIGINT NOT NULL,
    action    TEXT NOT NULL CHECK (action IN ('set', 'grant', 'reset')),
    scope     TEXT NOT NULL CHECK (scope IN ('user', 'role', 'guild')),
    target_id BIGINT NOT NULL,
    period    TEXT,
    metric    TEXT,
    before    TEXT,
    after     TEXT,
    summary   TEXT NOT NULL
);

CREATE INDEX quota_audit_by_guild ON quota_audit (guild_id, at);
