-- Zoom out, pan and Make square (BFL outpainting): the `mode` a server's moderators chose,
-- "high" (high fidelity, BFL's default) or "fast" (/settings outpaint).
ALTER TABLE guild_settings ADD COLUMN outpaint_mode TEXT NOT NULL DEFAULT 'high';
