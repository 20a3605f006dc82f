"""The bot's errors: one small hierarchy, each class carrying the text it shows by default.

    FluxcordError                 user_message: safe to show a member (no secrets, no URLs)
    ├── InvalidRequest            the member's request breaks a rule: str(exc) is the message
    │   ├── ButtonNotHere         a button used outside the channel of what it acts on
    │   └── leaves next to their rules: PromptMissing (bot.variants), ReferenceRejected
    │       (bot.references), TooManyInFlight (bot.generation), QuotaExceeded and
    │       TooManyRefunds (bot.ledger.quotas), PromptRefused and Blocked
    │       (bot.moderation.strikes), StudioBudgetExceeded, RequiredWordsMissing and
    │       ThemedPromptTooLong (bot.community.studios.rules)
    ├── ProviderError             a provider call failed; the message is for logs only
    │   ├── InsufficientCredits, ProviderAccessDenied (─ ProviderKeyRejected: 401),
    │   │   ProviderRejected, ProviderBusy, ProviderUnavailable, SubmitOutcomeUnknown,
    │   │   AnswerTooLarge
    │   └── ResultUnavailable ─ ResultTooLarge (UnsafeProviderURL and ResultLost near
    │                           the code that detects them, in bot.providers)
    ├── DeliveryImpossible        a finished result can never be posted where it was asked
    ├── ReviewChannelUnreachable  (bot.community.approvals) raised by the Discord review view
    ├── InvalidCharge             a provider's cost figure that cannot be real
    ├── InvalidPattern            a banned term the matcher cannot run (shown to moderators)
    ├── StartupError              for the operator; the message says it all
    │   ├── AnotherInstanceRunning
    │   ├── DatabaseUnavailable   the store cannot be reached, or refused the bot's login
    │   ├── SchemaNewerThanRelease  the database was migrated by a newer release
    │   └── MigrationsMissing     the installed package has no migrations (a broken install)
    └── SettingsError             a malformed setting; names it, never shows its value

The adapters show `user_message` (or `str()` of an InvalidRequest) and log the rest.
"""

from __future__ import annotations

INTERNAL_ERROR_TEXT = "Something went wrong on our side, and nothing was charged. Please try again."


class FluxcordError(Exception):
    """Base of the bot's own errors. `user_message` is the text safe to show; a subclass sets
    its default, an instance may carry a more precise one. `detail` (the exception's message)
    is for the logs."""

    user_message: str = INTERNAL_ERROR_TEXT

    def __init__(self, detail: str = "", *, user_message: str | None = None) -> None:
        super().__init__(detail or user_message or self.user_message)
        if user_message is not None:
            self.user_message = user_message


class InvalidRequest(FluxcordError, ValueError):
    """The request breaks a rule (a variant's limits, a quota, a server's settings). The
    message is written for the member and is safe to show: nothing was charged or stored."""

    def __init__(self, message: str) -> None:
        super().__init__(message, user_message=message)


class ButtonNotHere(InvalidRequest):
    """A button used outside the server or channel of what it acts on (its custom id copied
    into another message): it does nothing."""

    user_message = "This button doesn't belong to this channel, so it did nothing."

    def __init__(self) -> None:
        super().__init__(self.user_message)


# --------------------------------------------------------------------------- providers
class ProviderError(FluxcordError):
    """A provider call failed. `user_message` is safe to show in Discord (no secrets, no URLs)."""

    user_message = "The image service failed. Nothing was charged; please try again."


class InsufficientCredits(ProviderError):
    user_message = "The bot's image-service account is out of credits. Please tell a server admin."


class ProviderAccessDenied(ProviderError):
    """The provider refused the key for this request (BFL 403: no access to the model)."""

    user_message = "The bot's API key is not allowed to use this model. Please tell a server admin."


class ProviderKeyRejected(ProviderAccessDenied):
    """The provider does not accept the key at all (401): every request with it fails. The
    key checks (bot/providers/accounts.py) tell the operator in the log."""

    user_message = (
        "The bot's key for the image service is not working, so nothing was made or charged. "
        "The bot's operator has been told."
    )


class ProviderRejected(ProviderError):
    """The provider refused the request as invalid (400/422)."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        where = f" ({field})" if field else ""
        super().__init__(
            detail, user_message=f"The image service rejected the request{where}: {detail}"
        )
        self.field = field


class ProviderBusy(ProviderError):
    """Too many active tasks (429): wait and try again; never a failure on its own."""

    user_message = "The image service is busy."

    def __init__(self, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or is overloaded, and the task was not created."""

    user_message = (
        "The image service is unavailable right now. Nothing was charged; please try again."
    )


class SubmitOutcomeUnknown(ProviderError):
    """The submit may or may not have created (and billed) a task: never resubmit blindly."""

    user_message = (
        "The image service did not confirm the request, so it was stopped rather than risk "
        "paying twice. Please try again."
    )


class ResultUnavailable(ProviderError):
    user_message = "The finished image could not be downloaded (its link may have expired)."


class ResultTooLarge(ResultUnavailable):
    user_message = "The finished image was larger than the bot accepts."


class AnswerTooLarge(ProviderError):
    """A status or JSON answer was larger than any real one: it is not read further."""

    user_message = (
        "The image service sent an answer far larger than it should, so the bot stopped "
        "following this request. You were not charged."
    )


# --------------------------------------------------------------------------- the rest
class DeliveryImpossible(FluxcordError):
    """The result can never be posted (channel gone, no permission): stop retrying.
    `user_message` says why, for the failure text."""


class InvalidCharge(FluxcordError, ValueError):
    """A charge that cannot be real (negative, not finite, beyond any budget): refused, so a
    provider's bad figure can neither pay a member back nor break the window totals."""


class InvalidPattern(FluxcordError, ValueError):
    """A banned term that cannot be used; the message is safe to show to a moderator."""

    def __init__(self, message: str, *, pattern: str = "") -> None:
        super().__init__(message, user_message=message)
        self.pattern = pattern


class StartupError(FluxcordError):
    """A start-up failure the operator can fix; the message is the whole explanation, on one
    line. `exit_code`: 1 when something around the bot is wrong (it may work next time), 2
    when a setting is (like a configuration error)."""

    exit_code = 1

    def __init__(self, detail: str, *, exit_code: int | None = None) -> None:
        super().__init__(detail)
        if exit_code is not None:
            self.exit_code = exit_code


class AnotherInstanceRunning(StartupError):
    pass


class DatabaseUnavailable(StartupError):
    """The database could not be opened: unreachable (exit 1), or it refused the login or has
    no such database (exit 2: DATABASE_URL needs fixing). Names the server, never a password."""


class SchemaNewerThanRelease(StartupError):
    """The database's schema is newer than the migrations this release ships: an older
    release started after an upgrade. It refuses rather than run on a schema it doesn't know."""


class MigrationsMissing(StartupError):
    """No migrations where the package keeps them: a wheel or image built without its package
    data. Without this check `migrate` would report "up to date" on an empty database."""


class SettingsError(FluxcordError):
    """A setting is missing or malformed; the message names it and never shows its value."""
