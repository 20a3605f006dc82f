-- A server's LoRA catalogue (bot/loras.py): LoRAs uploaded to the BFL account that the
-- server's moderators offer on the FLUX.2 [klein] commands. `name` is what members pick
-- (unique per server, compared in lower case through `name_key`); `base` is the klein base
-- model the LoRA was uploaded for, which decides its `-finetuned` endpoint. Who added it is
-- in the audit log, not here: the table holds no member's data.
CREATE TABLE server_loras (
    guild_id    INTEGER NOT NULL,
    name_key    TEXT NOT NULL,
    name        TEXT NOT NULL,
    finetune_id TEXT NOT NULL,
    base        TEXT NOT NULL,
    strength    REAL NOT NULL,
    trigger_phrase TEXT,
    added_at    REAL NOT NULL,
    PRIMARY KEY (guild_id, name_key)
) WITHOUT ROWID;
