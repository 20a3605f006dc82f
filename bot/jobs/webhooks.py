"""BFL webhooks, the engine's side: per-job secrets and URLs, verifying a delivery, reading
its body. `bot.operations.web` only routes requests here."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import quote

from bot.providers.base import TaskOutcome, TaskResult
from bot.providers.bfl import classify_status, parse_task_payload
from bot.storage.db import Database
from bot.storage.secrets import shared_secret

WEBHOOK_PATH = "/webhooks/bfl"
# BFL's limit for `webhook_url`.
MAX_WEBHOOK_URL_LENGTH = 2083


@dataclass(frozen=True)
class WebhookSubscription:
    """What the receiver needs to know about a job to verify a delivery for it."""

    # Never in a repr, so never in a log line. None: the job has ended and its secret was
    # erased with it, so nothing a delivery says can change anything (see bot/operations/web.py).
    secret: str | None = field(repr=False)
    # The provider task id once the submit answer is recorded; None before that (a webhook
    # may arrive first: then the delivery's own task id is accepted).
    task_id: str | None = None


class WebhookTarget(Protocol):
    """How the receiver talks to the job engine."""

    async def webhook_subscription(self, job_id: str) -> WebhookSubscription | None:
        """The job's secret and task id; None when no such job exists (or it has no secret).
        A closed job answers with secret None (erased when it closed): the receiver then
        says 200 without reading anything, so a late duplicate is not retried.
        Called for every request before it is authenticated: an id without the fleet's tag
        (`job_id_from_url`) must be refused from memory, without a database read."""
        ...

    async def webhook_result(self, job_id: str, task_id: str, result: TaskResult) -> None:
        """A verified delivery. Must be idempotent (duplicates, late arrivals, races with
        polling) and return promptly: downloads and posting belong in the engine's tasks.
        `result.outcome` may be RUNNING/UNKNOWN (e.g. "Ready" without an image link): treat
        those as a hint to poll now, not as an ending."""
        ...


def new_webhook_secret() -> str:
    """A per-job webhook secret: 256 random bits, URL- and header-safe."""
    return secrets.token_urlsafe(32)


# A webhook URL names its job as `<job id>_<tag>`: the tag, an HMAC of the job id under a key
# every process reads from the database, lets any process refuse from memory an id that is
# made up or copied from a button (job ids are public: every button carries one), so a flood
# of them costs no database read, while still looking up any real job in the fleet.
URL_TAG_SEPARATOR = "_"


def url_tag(key: bytes, job_id: str) -> str:
    return hmac.new(key, job_id.encode(), hashlib.sha256).hexdigest()[:16]


def tagged_job_id(key: bytes, job_id: str) -> str:
    return f"{job_id}{URL_TAG_SEPARATOR}{url_tag(key, job_id)}"


def split_tagged_job_id(url_id: str) -> tuple[str, str | None]:
    """(job id, tag) from a webhook URL's last segment; tag None when it has none."""
    job_id, separator, tag = url_id.partition(URL_TAG_SEPARATOR)
    return (job_id, tag) if separator else (url_id, None)


def has_valid_tag(key: bytes | None, job_id: str, tag: str | None) -> bool:
    return key is not None and tag is not None and hmac.compare_digest(url_tag(key, job_id), tag)


def job_id_from_url(key: bytes | None, url_id: str) -> str | None:
    """The job a webhook URL's last segment names, if it carries the fleet's tag for it;
    None for any other id (made up, copied from a button, or from a URL made before tags,
    whose job polling still finishes). Answered from memory."""
    job_id, tag = split_tagged_job_id(url_id)
    return job_id if has_valid_tag(key, job_id, tag) else None


async def webhook_url_key(db: Database) -> bytes:
    """The fleet's key for webhook URL tags: made once, then shared through the store."""
    return await shared_secret(db, "webhook_url_key")


def webhook_url(public_base: str, job_id: str, *, key: bytes) -> str:
    """The URL BFL should call for `job_id`, e.g.
    ``https://bot.example.com/webhooks/bfl/ab12…_<tag>`` (always tagged with the fleet's
    `key`, see URL_TAG_SEPARATOR: an untagged id is refused). `public_base` is
    WEBHOOK_PUBLIC_URL: where this server's root is reachable from outside."""
    url = f"{public_base.rstrip('/')}{WEBHOOK_PATH}/{quote(tagged_job_id(key, job_id), safe='')}"
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise ValueError(f"webhook URL is longer than BFL accepts ({MAX_WEBHOOK_URL_LENGTH})")
    return url


def verify_webhook(raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """True when the delivery carries the secret itself or a valid HMAC-SHA256 of the body.

    Both forms are checked in constant time, and either alone is enough: BFL's SDK documents
    the echoed secret, one unofficial source the signature; which one BFL sends is unsure.
    """
    if not secret:
        return False  # an empty secret would match an empty header
    key = secret.encode()
    verified = False
    given_secret = headers.get("X-Webhook-Secret")
    if given_secret is not None:
        verified |= hmac.compare_digest(_header_bytes(given_secret), key)
    signature = headers.get("X-BFL-Signature")
    if signature is not None:
        scheme, _, digest = signature.strip().partition("=")
        if scheme.strip().lower() == "sha256" and digest:
            expected = hmac.new(key, raw_body, hashlib.sha256).hexdigest().encode()
            verified |= hmac.compare_digest(_header_bytes(digest.strip().lower()), expected)
    return verified


def _header_bytes(value: str) -> bytes:
    # aiohttp decodes header bytes as UTF-8 with surrogateescape; this is the exact inverse,
    # so odd bytes compare (unequal) instead of raising.
    return value.encode("utf-8", "surrogateescape")


def webhook_task_result(payload: Mapping[str, Any]) -> TaskResult:
    """Read a webhook body with the provider's own defensive parser.

    One difference from a poll: a body that says Ready but has no image link we can read is
    not proof that the task failed (the webhook format is undocumented), so it is handed over
    as UNKNOWN, and the engine confirms with a poll.
    """
    result = parse_task_payload(payload)
    if (
        result.outcome is TaskOutcome.FAILED
        and classify_status(str(payload.get("status") or "")) is TaskOutcome.READY
    ):
        result = replace(result, outcome=TaskOutcome.UNKNOWN)
    return result
