"""A Discord stand-in (REST API v10 + gateway) for end-to-end tests of the *unmodified* discord.py.

Import it as ``from tests.fakes.discord_server import FakeDiscord, Upload``.

Quick tour
==========

.. code-block:: python

    async with FakeDiscord() as fake:                 # real aiohttp server on 127.0.0.1
        guild = fake.add_guild("Test Guild")          # @everyone role (id == guild.id) + bot member
        channel = fake.add_text_channel(guild.id, "general")
        mods = fake.add_role(guild.id, "Moderator", permissions=1 << 5)
        alice = fake.add_member(guild.id, "alice", roles=[mods.id])
        fake.set_overwrite(channel, alice, allow=1 << 13)  # Manage Messages in #general only

        with fake.patch_discord_py():                 # Route.BASE, DEFAULT_GATEWAY, Asset.BASE
            client = MyClient(intents=..., guild_ready_timeout=0.05)
            task = asyncio.create_task(client.start(fake.token))
            await fake.wait_until_connected()
            ...
            it = await fake.invoke_slash(alice.id, channel.id, "imagine",
                                         {"prompt": "a cat", "image": Upload("a.png", png)})
            callback = await it.response()            # Callback(type=5, data={...})
            original = await it.wait_original(lambda m: m.attachments)
            assert original.attachment("out.png").data == expected
            await client.close(); await task
        assert not fake.unhandled_requests

Lifecycle & identity
--------------------
``FakeDiscord(*, token="test-discord-token", bot_name="Fluxcord", bot_permissions=...,
interaction_deadline=3.0, attachment_size_limit=10 MiB, privileged_intents=ALL,
rate_limits=True, interaction_token_lifetime=900.0, shard_count=1, max_concurrency=1,
identify_interval=5.0, identify_rate_limit=None, ...)`` (the last four: see Sharding below);
``await start()`` / ``await close()`` / ``async with``; ``base_url``; ``token``;
``application_id`` (== ``bot_id``); ``bot_user`` (user dict); ``interaction_deadline``
(settable; ``None`` disables); ``rate_limits`` (settable, also mid-test: ``False`` answers
never-exhausted headers and no 429s, for tests that deliberately flood);
``shared_webhook_limit`` (settable, default 30; ``None`` off), ``shared_webhook_window``
(settable, default 60.0 s) and ``shared_webhook_limit_counts_edits`` (settable, default
``False``): Discord's hidden shared per-channel limit on webhook messages (see Rate limits);
``interaction_token_lifetime`` (settable: seconds after its creation an interaction's
webhook routes answer 401 50027); ``interaction_delivery_delay`` (settable, default 0: the
gateway delivers each interaction this many seconds after its creation, as a loaded Discord
may, and its 3 s still count from the creation); ``patch_discord_py()`` (context manager,
restores the originals on exit). State survives client restarts: stop one
``discord.Client`` and log in another against the same fake. Close discord.py clients
*before* closing the fake.

discord.py timing to know about: ``on_ready`` fires ``guild_ready_timeout`` (default 2 s)
after the last GUILD_CREATE, so pass e.g. ``guild_ready_timeout=0.05`` to the client; and
every non-initial IDENTIFY (after INVALID_SESSION) sleeps 5 s in ``before_identify_hook``.

World setup (sync; dispatched as GUILD_CREATE/CHANNEL_CREATE/... if a bot is connected)
------------------------------------------------------------------------------------
``add_guild(name, *, owner_id=None, shard_id=None) -> Guild`` (``shard_id``: its id is picked
so that ``(id >> 22) % shard_count == shard_id``; ``ValueError`` outside ``range(shard_count)``),
``add_text_channel(guild_id, name, *, topic=None, nsfw=False) -> Channel``,
``add_role(guild_id, name, *, permissions=0) -> Role``,
``add_member(guild_id, name, *, roles=(), permissions=None, nick=None, bot=False, user_id=None)
-> User`` (``permissions`` replaces the computed value in every channel, overwrites and
implicit rules included: give it VIEW_CHANNEL etc. too),
``add_thread(channel, name, *, owner_id=None, message=None, private=False, archived=False,
locked=False, auto_archive_duration=1440) -> Channel`` (a thread a member started; from
``message`` it shares the message's id), ``open_dm(user) -> Channel`` (the bot's DM channel with
that user, type 1, created once; the same one ``POST /users/@me/channels`` returns),
``set_member_roles(guild_id, user_id, roles) -> Member`` (GUILD_MEMBER_UPDATE only with the
GUILD_MEMBERS intent, or when the member is the bot; interactions always report the new roles
and permissions; an ``add_member(permissions=...)`` override keeps winning),
``set_accepts_dms(user, accepts)`` (``False``: the bot's DMs to them fail with 403 50007),
``set_overwrite(channel, target, *, allow=0, deny=0) -> Channel`` (a channel permission
overwrite, as under Edit Channel → Permissions: ``target`` a ``Role``, a ``User``/member, or
the ``Guild``/guild id for @everyone; replaces that target's overwrite, ``allow=deny=0``
removes it; dispatches CHANNEL_UPDATE; its threads follow it; ``ValueError`` on threads and
DMs, for bits outside ``discord.Permissions.all_channel()`` such as ADMINISTRATOR, and for a
bit both allowed and denied).

Injection (all ``async``; interactions first wait until a session of the channel's shard is READY)
-------------------------------------------------------------------------------------------------
``invoke_slash(user, channel, "cmd" | "group sub", options=None, *, subcommand=None, locale=...,
ignore_default_permissions=False)``,
``invoke_message_command(user, channel, name, target_message, *,
ignore_default_permissions=False)``,
``invoke_user_command(user, channel, name, target_user, *, ignore_default_permissions=False)``,
``invoke_autocomplete(user, channel, "cmd" | "group sub", options=None, *, focused, locale=...)``
(a member typing in the ``autocomplete`` option ``focused``: an interaction of type 4 whose
focused option carries the typed text as a string, other options as given, required ones
optional; the bot answers with callback 8, whose ``choices`` (≤ 25, names 1–100 characters,
string values ≤ 100) are checked and kept in the handle's ``choices``, within the 3 s),
``click(user, message, custom_id)``, ``select(user, message, custom_id, values)``,
``submit_modal(user, channel, custom_id, {input_id: value}, *, message_id=None)``
each return an :class:`InteractionHandle`. ``channel`` may be a text channel, a thread
(``interaction.channel`` is a ``discord.Thread``) or a DM from ``open_dm`` (no ``guild_id``,
``user`` instead of ``member``, ``context`` 1: ``interaction.guild is None`` and
``interaction.user`` is a ``discord.User``). Interaction data is built from the *registered*
command; bad option names/values, disabled or missing buttons, and commands the Discord client
would not offer raise immediately (``ValueError``/``LookupError``/``PermissionError``): users
lacking ``default_member_permissions`` (in guilds only), guild-only commands (``contexts``
without 1, or legacy ``dm_permission: false``) and guild-scoped commands in DMs, commands with
``contexts`` without 0 in guilds, age-restricted (``nsfw``) commands outside nsfw channels and
their threads, any interaction in an archived thread, and users other than a DM's recipient.
In guilds the user must also have VIEW_CHANNEL in the channel for any interaction, and for
commands USE_APPLICATION_COMMANDS and ``default_member_permissions`` *in that channel*
(overwrites count, as in the Discord client).
``ignore_default_permissions=True`` skips only the ``default_member_permissions`` check, as
when a server admin grants the command under Server Settings → Integrations: use it to prove
the bot re-checks permissions itself.
``post_user_message(user, channel, content="", *, attachments=(), reply_to=None,
mention_bot=False, reply_ping=True, embeds=()) -> Message`` (``PermissionError`` without
VIEW_CHANNEL and SEND_MESSAGES, in threads SEND_MESSAGES_IN_THREADS, in the channel, or
ATTACH_FILES for ``attachments``; in threads: un-archives an
archived thread first, dispatching THREAD_UPDATE; ``PermissionError`` in a locked thread unless
the user has MANAGE_THREADS, and always in a locked archived one; in DMs only the recipient
may post); ``delete_message(message)``;
``await edit_channel(channel, **fields)`` edits a channel/thread as a moderator in the Discord
client would (the ``PATCH /channels/{id}`` fields, no permission rules; e.g.
``archived=True`` for an auto-archive), dispatching THREAD_UPDATE / CHANNEL_UPDATE.
Users/channels/messages/guilds may be passed as ids or as the returned records. Injections
first deliver pending world-setup events, so e.g. a GUILD_MEMBER_UPDATE reaches the bot before
the interaction that follows it.

Observation
-----------
``InteractionHandle``: ``callbacks`` (list of ``Callback(type, data)``), ``await response()``,
``original`` / ``await wait_original(pred=None)`` (waits past the deferred "thinking" state),
``followups`` / ``await wait_followup(pred=None)``, ``modal``, ``choices``, ``payload``,
``await wait_for(pred)``.
``messages(channel_id, *, include_deleted=False, include_ephemeral=True)``, ``message(id)``,
``await wait_for(pred, timeout=5)`` (an ``asyncio.Condition`` notified on every fake state
change, so ``pred`` should read fake state, not the bot's variables; returns ``pred()``),
``await wait_for_message(pred=None, *, channel_id=None, after=None)``,
``await wait_until_connected(timeout=5, *, shard_id=None)`` (``None``: a session of every
shard in ``range(shard_count)``), ``commands(guild_id=None)``,
``command(name, *, guild_id=None, type=1)``, ``threads(parent_id=None)``,
``channel(id) -> Channel`` (as stored now: ``name, topic, nsfw, rate_limit_per_user``,
``overwrites`` (``Overwrite(id, type, allow, deny)``, type 0 role / 1 member); threads
``archived, locked, auto_archive_duration, owner_id, parent_id``; DMs ``recipient_id``),
``channel_permissions(channel, user) -> int`` (what interactions there report),
``dm_channel(user) -> Channel | None`` (did anyone open that DM?), ``requests`` /
``unhandled_requests`` (``LoggedRequest(method, path, json, query, files, status)``;
unpacks as ``method, path, json``; 429s are in there with ``status == 429``),
``rate_limited`` (every 429 given: ``RateLimitHit(method, path, bucket, scope, retry_after,
is_global, time)``; ``bucket`` is the route's ``X-RateLimit-Bucket`` hash, ``scope``
``"user"``, ``"global"`` or ``"shared"``, ``time`` a ``time.time()``), ``cdn_requests``, ``typing``,
``interactions``,
``identify_count``, ``resume_count``, ``gateway_connected`` (a session of any shard is READY),
``last_identify``; sharding: ``identify_counts`` (``{shard_id: accepted IDENTIFYs}``),
``identify_rate_violations``, ``overlapping_shard_sessions``, ``session_start_limit``,
``shard_for_guild(guild | None) -> int``, ``gateway_sessions(shard_id=None) ->
list[ShardSession]`` (snapshots of the live, i.e. not invalidated, sessions, oldest first:
``session_id, shard_id, num_shards, shard, intents, connected`` (socket open and READY; a
dropped one that may still RESUME stays listed with ``False``), ``dispatched`` (``(event,
payload)`` of everything sent to it), ``event_names``, ``events(name) -> list[payload]``),
``gateway_closes -> list[GatewayClose(code, reason, shard)]`` (every close the stand-in
initiated: 4004, 4005, 4010, 4011, 4014 and test drops; ``shard`` the IDENTIFY's pair).
``Message`` fields: ``id, channel_id, guild_id, author_id, type, content, embeds, components,
attachments`` (``Attachment``: ``filename, content_type, data``/``bytes, size, width, height,
url``), ``flags, ephemeral, visible_to, loading, message_reference, reply_to,
allowed_mentions, mentions, nonce, interaction_id, interaction_metadata, thread_id, edits,
edited_at, history, deleted`` plus ``attachment(name)``, ``component(custom_id)``,
``custom_ids``.

Gateway knobs: ``await drop_gateway(*, code=4000, resumable=True, shard_id=None)`` (client
RESUMEs, or gets INVALID_SESSION and re-IDENTIFYs), ``await request_gateway_reconnect(*,
shard_id=None)`` (opcode 7); ``shard_id`` limits either to that shard's sessions.

Discord behaviour implemented
-----------------------------
* Login (``/users/@me``, ``/oauth2/applications/@me``; the application's ``flags``, there and
  in READY, are the ``GATEWAY_*_LIMITED`` bits of ``privileged_intents``, settable: a test
  turns the Message Content intent "off in the developer portal" with
  ``fake.privileged_intents = 0``), ``/gateway[/bot]``, HELLO/IDENTIFY/
  READY (unavailable guilds, ``application``, ``resume_gateway_url``) then GUILD_CREATE per
  guild, heartbeat ACKs, RESUME with replay of missed events, INVALID_SESSION, close codes
  4004 (bad token) / 4014 (disallowed privileged intent), GUILD_MEMBERS_CHUNK for op 8.
* Intents: guild MESSAGE_* only with GUILD_MESSAGES, DM ones only with DIRECT_MESSAGES;
  content/embeds/attachments/components blanked without MESSAGE_CONTENT unless the bot is the
  author or mentioned or it is a DM; GUILD_CREATE members limited to the bot without
  GUILD_MEMBERS; GUILD_MEMBER_UPDATE only with GUILD_MEMBERS (always for the bot itself).
* Application commands: bulk overwrite/upsert/get/edit/delete (global and guild) with
  Discord's main validation rules and ids that stay stable across overwrites.
* Interactions: callbacks 4/5/6/7/8/9 (multipart too, ``with_response``), 3 s deadline
  (10062 Unknown interaction), double acknowledgement (40060), ``@original`` and followup
  webhooks (the first followup after a deferral replaces the "thinking" message), ephemeral
  messages visible only to the invoker and never dispatched over the gateway,
  ``interaction_metadata`` on responses.
* Channel messages: create (JSON/multipart, replies, allowed_mentions, enforce_nonce dedupe),
  edit (keep attachments listed by id, append uploads), delete, get, list, typing, threads
  (from a message: thread id == message id; standalone), own reactions; MESSAGE_CREATE/
  UPDATE/DELETE and THREAD_CREATE dispatched. Validation of content/embed/component limits,
  duplicate custom_ids, empty messages, the files of one request together over
  ``attachment_size_limit`` (413 40005); ``attachment://`` in embeds resolved.
* Channel/thread edits (``PATCH /channels/{id}``): threads ``name, archived, locked, invitable,
  auto_archive_duration, rate_limit_per_user``; text channels ``name, topic, nsfw,
  rate_limit_per_user, default_auto_archive_duration`` (other fields: 400 and listed in
  ``unhandled_requests``); answers the channel and dispatches THREAD_UPDATE / CHANNEL_UPDATE.
  Discord's thread rules: an archived thread takes no edit unless it sets ``archived: false``
  (50083); ``locked``/``rate_limit_per_user``/``invitable`` need MANAGE_THREADS, ``name``/
  ``archived``/``auto_archive_duration`` MANAGE_THREADS or being the creator (403 50013).
* Archived and locked threads: a message (bot, followup or user) un-archives an archived thread
  unless it is locked; locked threads take messages, edits and reactions only from members
  with MANAGE_THREADS (the bot's default role has it; else 160005); locked archived threads
  take none (50083); edits and reactions in archived threads: 50083; deleting always works.
* Direct messages: ``POST /users/@me/channels``; DM messages have no ``guild_id``/``member``;
  sending to a bot user or one who refuses DMs: 403 50007. In the bot's DM, commands follow
  ``contexts`` (or legacy ``dm_permission`` when null); ``default_member_permissions`` does not
  apply there (Discord documents it as restricting use "in a guild"); ``app_permissions`` is
  discord.py's DM permission set; ``authorizing_integration_owners`` is ``{"0": "0"}``.
* Permissions (https://discord.com/developers/docs/topics/permissions): guild level is
  @everyone | the member's roles (owner or ADMINISTRATOR: everything, no overwrite applies);
  in a channel the @everyone overwrite (deny, then allow), then the union of the member's role
  overwrites (all denies, then all allows), then the member's own overwrite; threads use their
  parent's overwrites; then the implicit rules exactly as discord.py's ``permissions_for``
  applies them (no VIEW_CHANNEL: no channel permission; no SEND_MESSAGES, in threads
  SEND_MESSAGES_IN_THREADS: no embeds/files/TTS/@everyone; text channels drop the voice bits),
  so ``channel.permissions_for(member)`` computed by discord.py from the cached channel equals
  what interactions report. Channels carry ``permission_overwrites`` (``{id, type, allow,
  deny}``, strings) in GUILD_CREATE, CHANNEL_CREATE/UPDATE and ``GET /channels/{id}``.
  Interactions report channel-level values: ``member.permissions`` (the invoker's),
  ``app_permissions`` (the bot's), resolved members' ``permissions`` (in the interaction's
  channel) and resolved channels' ``permissions`` (the invoker's in that channel); the thread
  rules and command visibility use them too. ``POST /channels/{id}/messages`` by the bot
  needs VIEW_CHANNEL (else 403 50001 Missing Access), SEND_MESSAGES (in threads
  SEND_MESSAGES_IN_THREADS) and for files ATTACH_FILES (else 403 50013); interaction
  responses and followups do not (webhooks), as on Discord.
* Age-restricted: nsfw channels report ``nsfw``; threads carry no ``nsfw`` of their own
  (discord.py's ``Thread.is_nsfw()`` reads the parent, which the fake keeps consistent).
* Attachments are served at ``{base_url}/attachments/...`` (``/media/...`` as proxy_url).
* Interaction tokens expire ``interaction_token_lifetime`` s (Discord: 15 min) after the
  interaction was created: then followup create and GET/PATCH/DELETE of ``@original`` or a
  followup answer 401 ``{"message": "Invalid Webhook Token", "code": 50027}``. Once a deferred
  "thinking" ``@original`` is deleted, a followup is a new message with its own flags.
* Rate limits (``ratelimits.py``; on unless ``rate_limits=False``), checked before a route's
  handler runs, so a refused request has no effect. Fixed windows starting at the first
  request after the previous window ended, counted per major parameter:
  ``POST /channels/{id}/messages`` 5/5 s per channel; ``PATCH …/messages/{id}`` 5/5 s per
  channel, counted apart from POST but answering the same ``X-RateLimit-Bucket``
  (discord-api-docs#1442); ``DELETE …/messages/{id}`` 5/1 s; own reactions (``PUT`` and
  ``DELETE …/reactions/{emoji}/@me``, one budget, discord-api-docs#981) 1/0.25 s; interaction
  webhooks (``/webhooks/{application_id}/{token}[/messages/{message}]``, every method) 5/2 s
  per interaction token (discord-api-docs#2701); the interaction callback 5/2 s per
  interaction; every other authenticated route 50/1 s per route and channel (else guild).
  Global: 50 requests/s per bot over all authenticated requests except the interaction routes
  (unauthenticated ``GET /gateway`` is not limited). Every answer of a limited route, errors
  included, carries counting ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (Unix s, ms)/
  ``-Reset-After``/``-Bucket`` (one stable hash per bucket group, not per channel). Over a
  limit: 429 ``{"message": "You are being rate limited.", "retry_after": s, "global": bool,
  "code": 0}`` with ``Retry-After`` (whole seconds, rounded up), ``X-RateLimit-Scope``
  (``user`` / ``global``), ``X-RateLimit-Global: true`` on global ones and ``Via: 1.1 google``
  (without it discord.py takes a 429 for a Cloudflare ban). A refused request does not count.
  discord.py reads the headers and sleeps, so the unmodified client flooding one route gets
  no 429 (mixing sends and edits in one channel can: it keys both by their shared hash, as
  on Discord); it learns nothing of the global limit before a 429, so a bot over 50
  requests/s gets global 429s (and retries after ``retry_after``).
  Shared per-channel webhook limit (on by default): followups (``POST
  /webhooks/{application_id}/{token}``, ephemeral ones too) also count per *channel* (the
  interaction's), ``shared_webhook_limit`` (30) per ``shared_webhook_window`` (60 s), a fixed
  window like the others; with ``shared_webhook_limit_counts_edits`` PATCH of a webhook
  message (``@original`` or a followup) counts too. Staff confirmed a 30/60 s limit "to the
  channel itself" (discord-api-docs#367); #1454/#4043 report its 429 after ~30 messages with
  ``retry_after`` 40-45 s while the bucket headers still show the per-token bucket; #3763:
  followups hit it. Over it: 429 ``{"message": "You are being rate limited.", "retry_after":
  <the channel window's remaining seconds>, "global": false, "code": 0}``, ``Retry-After``,
  ``X-RateLimit-Scope: shared``, ``Via`` and the per-token bucket's own headers
  (``X-RateLimit-Bucket`` too, ``Remaining`` as it is); refused before the handler, not
  counted anywhere, recorded in ``rate_limited`` with ``scope == "shared"``. discord.py's
  webhook adapter sleeps ``retry_after`` and retries, up to 5 attempts, then raises
  ``HTTPException`` (status 429).
* Sharding (https://discord.com/developers/docs/topics/gateway#sharding): ``shard_count``
  (settable; default 1, where everything is single-shard as before) is what ``GET
  /gateway/bot`` answers as ``shards``, with ``session_start_limit`` ``{total: 1000,
  remaining: 1000 - accepted IDENTIFYs, reset_after: ms left of a 24 h window since start,
  max_concurrency}`` (``GET /gateway`` answers only ``url``, as on Discord). IDENTIFY's
  ``shard: [shard_id, num_shards]`` (missing: ``[0, 1]``) must have ``0 <= shard_id <
  num_shards``, else close 4010 "Invalid shard."; when ``shard_count > 1`` ``num_shards``
  must equal it: fewer closes 4011 "Sharding required.", more 4010 (with ``shard_count`` 1
  any valid pair is accepted and used). Each session then gets only its guilds, those with
  ``(guild_id >> 22) % num_shards == shard_id``: READY's ``guilds``, GUILD_CREATE, every
  guild event (messages, threads, channels, roles, members, new guilds) and interactions;
  DM messages and DM interactions go to shard 0. READY's ``shard`` echoes the pair;
  GUILD_MEMBERS_CHUNK answers only for the session's guilds. An interaction goes to the
  newest READY session of its shard; other events to every live session of the shard (two
  sessions holding one shard both get them, as on Discord, and the second IDENTIFY counts in
  ``overlapping_shard_sessions`` on arrival, even if refused for the rate limit).
  IDENTIFY rate limit: shard ``i`` identifies in bucket ``i % max_concurrency``; a bucket
  takes one IDENTIFY per ``identify_interval`` s, timed on arrival with no slack (as Discord
  does: a client that waits exactly the interval by its own clock may arrive early), a quicker
  one gets opcode 9 INVALID_SESSION ``d: false`` (no session; counted in
  ``identify_rate_violations``; discord.py waits in ``before_identify_hook`` and retries).
  Enforced when ``identify_rate_limit`` is true; its default ``None`` means "only when
  ``shard_count > 1``", so single-shard tests may restart clients back to back. discord.py's
  ``AutoShardedClient`` already sleeps 5 s before each non-first shard, so it starts cleanly
  under the default 5 s interval (tests may lower both: the interval here, the sleep in the
  client's ``before_identify_hook``).
* Unknown routes: 404 ``{"message": "404: Not Found", "code": 0}`` + ``unhandled_requests``.

Not implemented (on purpose): group DMs and user installs, voice, forum channels, categories
(and overwrites synced from them), member timeouts, the bot editing overwrites
(``PUT``/``DELETE /channels/{id}/permissions/{target}``), permission checks on the bot's REST
calls other than posting and the thread rules above (e.g. EMBED_LINKS, ADD_REACTIONS,
READ_MESSAGE_HISTORY for replies, CREATE_*_THREADS, MANAGE_MESSAGES to delete others'),
thread member lists, channel deletion, slowmode enforcement, rate limits other than those
above (per-guild followup limits, sub-limits such as channel renames, the invalid-request
ban, Cloudflare), webhooks other than interaction tokens, message
forwarding, polls beyond storing them, presence updates, zlib compression (plain JSON text
frames are sent, which discord.py accepts); of sharding: an exhausted session start budget
(``remaining`` stops at 0 but IDENTIFYs still pass), 4011 for "too many guilds" (it is
decided by ``shard_count`` alone), re-sharding a running bot (no GUILD_DELETE when
``shard_count`` changes), per-shard presence, and the large-bot rule that ``num_shards`` be a
multiple of 16.
"""

from .gateway import GatewayClose, ShardSession
from .models import (
    Attachment,
    Callback,
    Channel,
    Guild,
    InteractionHandle,
    LoggedRequest,
    Member,
    Message,
    Overwrite,
    Role,
    Upload,
    User,
)
from .ratelimits import RateLimitHit
from .server import DEFAULT_TOKEN, FakeDiscord

__all__ = [
    "DEFAULT_TOKEN",
    "Attachment",
    "Callback",
    "Channel",
    "FakeDiscord",
    "GatewayClose",
    "Guild",
    "InteractionHandle",
    "LoggedRequest",
    "Member",
    "Message",
    "Overwrite",
    "RateLimitHit",
    "Role",
    "ShardSession",
    "Upload",
    "User",
]
