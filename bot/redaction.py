"""Secrets kept out of every log line, at every level.

discord.py logs each request's URL at DEBUG (and a rate-limited one at WARNING), and the
URLs of interaction answers carry the interaction's token (`/interactions/<id>/<token>/…`,
`/webhooks/<application id>/<token>/…`); it logs each gateway event at DEBUG, and
INTERACTION_CREATE carries the same token as a field. Anyone holding one may answer as the
bot for 15 minutes. `install_redaction` rewrites every log record as it is created, before
any handler, filter or formatter sees it (a filter on one handler would leave the others,
and any added later, unprotected), blanking those tokens and the configured secrets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "[redacted]"
# Shorter "secrets" would blank ordinary words; real tokens and keys are far longer.
MIN_SECRET_LENGTH = 8

# The token segment after /webhooks/<id>/ or /interactions/<id>/ in a Discord URL. (Our own
# receiver's `/webhooks/bfl/<job>` names no numeric id, and carries no credential.)
_URL_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?#'\"]+")
# A `token` field in a logged payload: a gateway event's repr ('token': '…'), or JSON.
_TOKEN_FIELD = re.compile(r"""(["']token["']\s*:\s*["'])[^"']*""")


class Redactor:
    """Blanks Discord's token-bearing URL segments and token fields, and any of `secrets`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is blanked whole.
        self._secrets = sorted(
            {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH},
            key=len,
            reverse=True,
        )

    def __call__(self, text: str) -> str:
        text = _URL_TOKEN.sub(rf"\g<1>{REDACTED}", text)
        text = _TOKEN_FIELD.sub(rf"\g<1>{REDACTED}", text)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


RecordFactory = Callable[..., logging.LogRecord]


def install_redaction(secrets: Iterable[str] = ()) -> RecordFactory:
    """Redact every log record from now on; returns the factory it replaced (to restore)."""
    redact = Redactor(secrets)
    previous = logging.getLogRecordFactory()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record, redact)
        return record

    logging.setLogRecordFactory(redacted_record)
    return previous


def redact_record(record: logging.LogRecord, redact: Callable[[str], str]) -> None:
    """Format the record's message (and traceback) now, redacted: what any handler writes."""
    try:
        message = record.getMessage()
    except Exception:
        # Arguments that do not fit the format: logging reports that when the record is
        # handled, printing both. Redact them so that report leaks nothing either.
        record.msg = redact(str(record.msg))
        record.args = tuple(redact(repr(arg)) for arg in _as_tuple(record.args))
    else:
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        # Formatters use exc_text when it is set: the traceback is written as redacted here.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _as_tuple(args: object) -> tuple[object, ...]:
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)
