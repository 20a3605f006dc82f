"""Discord's REST rate limits for the stand-in: buckets, fixed windows and genuine 429s.

Sources, per bucket (route templates are those of :class:`rest.RestApi`):

* ``POST /channels/{channel_id}/messages``: 5 per 5 s per channel (long observed; what
  discord.py's bot sees as the "send message" limit).
* ``PATCH /channels/{channel_id}/messages/{message_id}``: 5 per 5 s per channel, counted
  separately from POST but answering the *same* ``X-RateLimit-Bucket`` hash
  (discord/discord-api-docs#1442, #8073). discord.py then keys both by that hash and tracks
  one budget fed by both counters' headers, so mixing sends and edits in one channel can
  earn it a 429, as it can on Discord.
* ``DELETE /channels/{channel_id}/messages/{message_id}``: 5 per 1 s per channel.
* Own reactions (``PUT``/``DELETE …/reactions/{emoji}/@me``): 1 per 0.25 s per channel, one
  budget for both methods (discord/discord-api-docs#981: adding and removing share a bucket).
* Interaction webhooks (``/webhooks/{application_id}/{token}`` and ``…/messages/{message}``,
  every method): 5 per 2 s per interaction token, exempt from the global limit
  (discord/discord-api-docs#2701: the token, not the application id, is the major parameter).
* ``POST /interactions/{interaction_id}/{token}/callback``: its own 5 per 2 s per
  interaction, exempt from the global limit (the docs: interaction endpoints are not bound
  to the bot's global rate limit).
* Every other authenticated route: 50 per 1 s per route and major parameter (``channel_id``,
  else ``guild_id``, else none), a stand-in default (Discord does not publish per-route
  numbers).
* Global: 50 requests per second per bot over every authenticated request except the
  interaction routes above (the docs' "Global Rate Limit"). Unauthenticated routes
  (``GET /gateway``) are not limited at all.
* Shared, per channel: webhook messages (``POST /webhooks/{application_id}/{token}``, i.e.
  interaction followups, ephemeral ones included) are also counted per *channel* (the
  interaction's), 30 per 60 s by default, apart from the per-token bucket. Discord never
  published it: staff confirmed "the 30/60 was added as a limit to the channel itself"
  (discord/discord-api-docs#367); #1454 and #4043 report a 429 with ``retry_after`` of 40-45 s
  after about 30 webhook messages while ``X-RateLimit-Limit``/``-Remaining`` still show the
  ordinary per-token bucket, and staff answered that such "internal" limits carry
  ``X-RateLimit-Scope: shared``, where ``Retry-After`` overrides the bucket headers; #3763
  reports interaction followups (ephemeral too) hitting it. So its 429 is ``{"message": "You
  are being rate limited.", "retry_after": <the channel window's remaining seconds>,
  "global": false, "code": 0}`` with ``Retry-After``, ``X-RateLimit-Scope: shared`` and the
  per-token bucket's usual headers (``X-RateLimit-Bucket`` included, its ``Remaining`` not
  0). Whether edits of webhook messages (``PATCH …/messages/@original`` or a followup's id)
  count is not established: :attr:`RateLimiter.shared_counts_edits` (off by default) counts
  them too. The limit and window are settable (:attr:`RateLimiter.shared_limit`, ``None``
  turns it off; :attr:`RateLimiter.shared_window`), so tests can use e.g. 3 per 2 s.

Windows are fixed, like Discord's: one starts at the first request after the previous one
ended; ``X-RateLimit-Remaining`` is limit − used, ``X-RateLimit-Reset`` the window's end (Unix
seconds with ms), ``X-RateLimit-Reset-After`` the seconds left. Times are rounded *up* to the
millisecond so a client that sleeps exactly what it was told never arrives early. A request
over a limit is refused before its handler runs (no side effects) and does not count.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Literal

Scope = Literal["user", "global", "shared"]

GLOBAL_LIMIT = 50
GLOBAL_WINDOW_S = 1.0

MESSAGES = "/channels/{channel_id}/messages"
MESSAGE = MESSAGES + "/{message_id}"
OWN_REACTION = MESSAGE + "/reactions/{emoji}/@me"
WEBHOOK = "/webhooks/{application_id}/{token}"
WEBHOOK_MESSAGE = WEBHOOK + "/messages/{message}"
CALLBACK = "/interactions/{interaction_id}/{token}/callback"


def bucket_hash(group: str) -> str:
    """A stable, opaque 32-hex-digit hash like Discord's, one per bucket group."""
    return hashlib.md5(group.encode()).hexdigest()


@dataclass(frozen=True)
class Bucket:
    """How a route is limited."""

    #: Routes of one group answer the same ``X-RateLimit-Bucket`` hash.
    group: str
    #: Routes with the same counter spend one budget (per major parameter).
    counter: str
    limit: int
    window: float
    #: Counted per interaction token and exempt from the global limit.
    per_token: bool = False

    @property
    def hash(self) -> str:
        return bucket_hash(self.group)


_MESSAGE_SEND = Bucket("channel-messages", "message-create", 5, 5.0)
_MESSAGE_EDIT = Bucket("channel-messages", "message-edit", 5, 5.0)
_MESSAGE_DELETE = Bucket("message-delete", "message-delete", 5, 1.0)
_OWN_REACTION = Bucket("own-reaction", "own-reaction", 1, 0.25)
_INTERACTION_WEBHOOK = Bucket("interaction-webhook", "interaction-webhook", 5, 2.0, per_token=True)
_INTERACTION_CALLBACK = Bucket(
    "interaction-callback", "interaction-callback", 5, 2.0, per_token=True
)

#: (method, route template) → its bucket; any other authenticated route gets :func:`bucket_for`'s
#: default.
BUCKETS: dict[tuple[str, str], Bucket] = {
    ("POST", MESSAGES): _MESSAGE_SEND,
    ("PATCH", MESSAGE): _MESSAGE_EDIT,
    ("DELETE", MESSAGE): _MESSAGE_DELETE,
    ("PUT", OWN_REACTION): _OWN_REACTION,
    ("DELETE", OWN_REACTION): _OWN_REACTION,
    ("POST", CALLBACK): _INTERACTION_CALLBACK,
    ("POST", WEBHOOK): _INTERACTION_WEBHOOK,
    ("GET", WEBHOOK_MESSAGE): _INTERACTION_WEBHOOK,
    ("PATCH", WEBHOOK_MESSAGE): _INTERACTION_WEBHOOK,
    ("DELETE", WEBHOOK_MESSAGE): _INTERACTION_WEBHOOK,
}
DEFAULT_LIMIT = 50
DEFAULT_WINDOW_S = 1.0
#: Discord's hidden per-channel limit on webhook messages (see the module docstring).
SHARED_WEBHOOK_LIMIT = 30
SHARED_WEBHOOK_WINDOW_S = 60.0
#: Counted by the shared per-channel limit always / only with ``shared_counts_edits``.
_SHARED_ALWAYS = frozenset({("POST", WEBHOOK)})
_SHARED_EDITS = frozenset({("PATCH", WEBHOOK_MESSAGE)})


def bucket_for(method: str, template: str) -> Bucket:
    known = BUCKETS.get((method, template))
    if known is not None:
        return known
    route = f"{method} {template}"
    return Bucket(route, route, DEFAULT_LIMIT, DEFAULT_WINDOW_S)


def _ceil_ms(seconds: float) -> float:
    return math.ceil(max(0.0, seconds) * 1000) / 1000


@dataclass
class Window:
    """A fixed window: ``used`` requests since ``started`` (monotonic seconds)."""

    limit: int
    length: float
    started: float = -math.inf
    used: int = 0

    def used_at(self, now: float) -> int:
        return 0 if now >= self.started + self.length else self.used

    def spend(self, now: float) -> None:
        if now >= self.started + self.length:  # the first request after the last window ended
            self.started, self.used = now, 0
        self.used += 1

    def reset_after(self, now: float) -> float:
        return _ceil_ms(self.started + self.length - now)


@dataclass(frozen=True)
class RateLimitHit:
    """One 429 the stand-in gave (``FakeDiscord.rate_limited``)."""

    method: str
    path: str
    #: The ``X-RateLimit-Bucket`` hash of the route's bucket (also for global 429s).
    bucket: str
    scope: Scope
    retry_after: float
    is_global: bool
    #: When it was refused (``time.time()``).
    time: float

    def body(self) -> dict[str, object]:
        return {
            "message": "You are being rate limited.",
            "retry_after": self.retry_after,
            "global": self.is_global,
            "code": 0,
        }


@dataclass(frozen=True)
class Verdict:
    """The rate limit headers to answer with, and the 429 when the request was refused."""

    headers: dict[str, str] = field(default_factory=dict)
    hit: RateLimitHit | None = None


class RateLimiter:
    """Counts requests per bucket and globally; :meth:`check` runs before any handler."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        #: Webhook messages per channel per ``shared_window`` (``None``: no shared limit).
        self.shared_limit: int | None = SHARED_WEBHOOK_LIMIT
        self.shared_window = SHARED_WEBHOOK_WINDOW_S
        #: Whether edits of webhook messages (``@original`` too) count against it.
        self.shared_counts_edits = False
        #: Every 429 given, oldest first.
        self.hits: list[RateLimitHit] = []
        self._windows: dict[tuple[str, str], Window] = {}
        self._shared: dict[int, Window] = {}
        self._global = Window(GLOBAL_LIMIT, GLOBAL_WINDOW_S)

    def counts_shared(self, method: str, template: str) -> bool:
        """Whether a request to this route counts against its channel's shared limit."""
        if self.shared_limit is None:
            return False
        key = (method, template)
        return key in _SHARED_ALWAYS or (self.shared_counts_edits and key in _SHARED_EDITS)

    def check(
        self,
        method: str,
        path: str,
        template: str,
        params: dict[str, str],
        *,
        authenticated: bool,
        shared_channel: int | None = None,
    ) -> Verdict:
        """Count one request to ``template``, or refuse it with a 429. ``shared_channel``: the
        channel whose shared webhook limit the request counts against, if it does."""
        bucket = bucket_for(method, template)
        if not authenticated and not bucket.per_token:
            return Verdict()  # GET /gateway: no limit, no headers
        if not self.enabled:
            return Verdict(self._unlimited_headers(bucket))
        major = (
            params.get("token", "")
            if bucket.per_token
            else params.get("channel_id") or params.get("guild_id") or ""
        )
        now = time.monotonic()
        if len(self._windows) > 4096:  # one per channel/token ever used: drop the idle ones
            self._windows = {k: w for k, w in self._windows.items() if w.used_at(now)}
        window = self._windows.get((bucket.counter, major))
        if window is None:
            window = self._windows[(bucket.counter, major)] = Window(bucket.limit, bucket.window)
        counts_globally = not bucket.per_token
        if counts_globally and self._global.used_at(now) >= self._global.limit:
            return self._refuse(method, path, bucket, window, now, is_global=True)
        if window.used_at(now) >= window.limit:
            return self._refuse(method, path, bucket, window, now, is_global=False)
        shared = self._shared_window(shared_channel, now)
        if shared is not None and shared.used_at(now) >= shared.limit:
            return self._refuse_shared(method, path, bucket, window, shared, now)
        window.spend(now)
        if shared is not None:
            shared.spend(now)
        if counts_globally:
            self._global.spend(now)
        return Verdict(self._headers(bucket, window, now))

    def _shared_window(self, channel_id: int | None, now: float) -> Window | None:
        if channel_id is None or self.shared_limit is None:
            return None
        if len(self._shared) > 4096:
            self._shared = {k: w for k, w in self._shared.items() if w.used_at(now)}
        window = self._shared.get(channel_id)
        if window is None or (window.limit, window.length) != (
            self.shared_limit,
            self.shared_window,
        ):  # new, or the test changed the numbers: a fresh window with them
            window = self._shared[channel_id] = Window(self.shared_limit, self.shared_window)
        return window

    def _refuse_shared(
        self, method: str, path: str, bucket: Bucket, window: Window, shared: Window, now: float
    ) -> Verdict:
        # The channel's window decides when to retry; the headers still describe the token's
        # own bucket (discord-api-docs#4043), which has requests left.
        retry_after = shared.reset_after(now)
        hit = RateLimitHit(method, path, bucket.hash, "shared", retry_after, False, time.time())
        self.hits.append(hit)
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": "shared",
            "Via": "1.1 google",
            **self._headers(bucket, window, now),
        }
        return Verdict(headers, hit)

    def _refuse(
        self, method: str, path: str, bucket: Bucket, window: Window, now: float, *, is_global: bool
    ) -> Verdict:
        retry_after = (self._global if is_global else window).reset_after(now)
        scope: Scope = "global" if is_global else "user"
        hit = RateLimitHit(method, path, bucket.hash, scope, retry_after, is_global, time.time())
        self.hits.append(hit)
        headers = {
            # The header is whole seconds, rounded up; the body has the precise value.
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Scope": scope,
            # discord.py takes a 429 without Via for a Cloudflare ban and raises.
            "Via": "1.1 google",
        }
        if is_global:
            # No bucket headers: the route's own window is not what refused the request.
            headers["X-RateLimit-Global"] = "true"
        else:
            headers.update(self._headers(bucket, window, now))
        return Verdict(headers, hit)

    @staticmethod
    def _headers(bucket: Bucket, window: Window, now: float) -> dict[str, str]:
        reset_after = window.reset_after(now)
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(max(0, bucket.limit - window.used_at(now))),
            "X-RateLimit-Reset": f"{_ceil_ms(time.time() + reset_after):.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket.hash,
        }

    @staticmethod
    def _unlimited_headers(bucket: Bucket) -> dict[str, str]:
        # Limits off: a bucket that never runs out and is always already reset, so discord.py
        # neither sleeps nor serialises requests (no headers at all would serialise them).
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.limit),
            "X-RateLimit-Reset": f"{time.time():.3f}",
            "X-RateLimit-Reset-After": "0.000",
            "X-RateLimit-Bucket": bucket.hash,
        }
