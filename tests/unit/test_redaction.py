"""The log redaction on its own: what a handler writes for records of every shape."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bot.redaction import REDACTED, Redactor, install_redaction

TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXQtdG9rZW4"
KEY = "bfl-key-0123456789abcdef"


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose handler writes to a buffer, with redaction installed (then removed)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    # Outside the logger tree, so that only this handler sees its records (pytest's own
    # would raise on a logging error, which is one of the cases here).
    logger = logging.Logger("redaction-test", logging.DEBUG)
    logger.addHandler(handler)
    previous = install_redaction([KEY])
    try:
        yield logger, buffer
    finally:
        logging.setLogRecordFactory(previous)


def test_discord_urls_and_token_fields_are_blanked() -> None:
    redact = Redactor([KEY])
    assert redact(f"POST https://discord.com/api/v10/interactions/123/{TOKEN}/callback") == (
        f"POST https://discord.com/api/v10/interactions/123/{REDACTED}/callback"
    )
    assert redact(f"PATCH /webhooks/42/{TOKEN}/messages/@original?wait=1") == (
        f"PATCH /webhooks/42/{REDACTED}/messages/@original?wait=1"
    )
    assert redact(f"{{'t': 'INTERACTION_CREATE', 'd': {{'token': '{TOKEN}'}}}}") == (
        f"{{'t': 'INTERACTION_CREATE', 'd': {{'token': '{REDACTED}'}}}}"
    )
    assert redact(f'{{"token": "{TOKEN}"}}') == f'{{"token": "{REDACTED}"}}'
    assert redact(f"x-key: {KEY}") == f"x-key: {REDACTED}"
    # Our own webhook receiver's path names a job, not a credential: left alone.
    assert redact("/webhooks/bfl/0123abcd_feedface") == "/webhooks/bfl/0123abcd_feedface"


def test_a_records_arguments_and_traceback_are_written_redacted(
    log: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str]
) -> None:
    logger, buffer = log
    logger.debug("%s %s has returned %s", "POST", f"/interactions/9/{TOKEN}/callback", 204)
    try:
        raise RuntimeError(f"request to /webhooks/1/{TOKEN}/messages failed with key {KEY}")
    except RuntimeError:
        logger.exception("answering failed")
    # Arguments that do not fit: logging reports the record on stderr, arguments and all.
    logger.warning("odd arguments %s", f"/webhooks/1/{TOKEN}", KEY)
    report = capsys.readouterr().err
    assert "--- Logging error ---" in report and "/webhooks/1/[redacted]" in report
    assert TOKEN not in report and KEY not in report
    text = buffer.getvalue()
    assert "/interactions/9/[redacted]/callback has returned 204" in text
    assert "RuntimeError: request to /webhooks/1/[redacted]/messages failed" in text
    assert TOKEN not in text and KEY not in text
