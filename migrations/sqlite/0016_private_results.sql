-- Private results (cogs/private.py, docs/creative-tools.md): a result only its requester
-- sees, as the ephemeral answer to their interaction (or in their DMs once its token has
-- expired), until they publish it once in the job's channel.

-- The job is shown privately: any process that delivers it, after a restart too, knows it.
ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
-- The public post of a private result; set once (compare-and-set), with the time a process
-- claimed the posting, so that two clicks or two processes post it at most once.
ALTER TABLE jobs ADD COLUMN published_message_id INTEGER;
ALTER TABLE jobs ADD COLUMN publish_claimed_at REAL;

-- Moderators' choice: results are private everywhere on the server, or in these channels
-- (a JSON list of channel ids; threads follow their channel).
ALTER TABLE guild_settings ADD COLUMN private_everywhere INTEGER NOT NULL DEFAULT 0;
ALTER TABLE guild_settings ADD COLUMN private_channels TEXT;
