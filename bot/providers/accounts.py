"""Provider accounts: does each configured key work, and how much is left on it.

BFL answers `GET /v1/credits` and the AI/ML API `GET /v1/billing/balance`; both need the
key, so one call tells whether the key is accepted and what the account holds. The checks
run at start-up and then every PROVIDER_CHECK_INTERVAL_SECONDS (`AccountMonitor`), and once
in `fluxcord doctor` (`check_keys`).

What the operator sees, once per change (not at every round):

* a rejected key: one ERROR line naming the setting, e.g. "BFL_API_KEY was rejected by Black
  Forest Labs (401): check the key in the BFL dashboard";
* an account with nothing left: ERROR; under LOW_BALANCE_CREDITS (or flagged low by the
  AI/ML API itself): WARNING;
* the metrics `fluxcord_provider_key_valid` and `fluxcord_provider_balance_credits`, and the
  per-provider report in `/readyz`.

The bot keeps running with a bad key: the other provider (or the account's other keys) may
work, and the admin can read what is wrong in `/readyz` and the log instead of a crash loop.
A provider is *usable* while one of its keys is not known to be bad; a check that got no
answer (network, 5xx) changes nothing, so a provider's outage does not flap readiness.

Keys are named by their setting and position ("BFL_API_KEYS key 2"), never by their value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from bot.errors import (
    InsufficientCredits,
    ProviderAccessDenied,
    ProviderError,
    ProviderKeyRejected,
)
from bot.jobs.claims import ProviderKey
from bot.operations.metrics import Metrics
from bot.periodic import cancel_and_wait, repeat
from bot.providers.aiml import AIMLClient
from bot.providers.bfl import BFLClient
from bot.settings import Settings

log = logging.getLogger(__name__)

PROVIDER_NAMES = {"bfl": "Black Forest Labs", "aiml": "the AI/ML API"}
ACCOUNTS = {"bfl": "Black Forest Labs account", "aiml": "AI/ML API account"}
DASHBOARDS = {"bfl": "the BFL dashboard", "aiml": "the AI/ML API dashboard"}


class KeyState(StrEnum):
    UNCHECKED = "unchecked"  # no answer yet
    OK = "ok"
    LOW = "low"  # works; the balance is under the warning threshold
    EMPTY = "empty"  # accepted, but the account has no credits: every request fails
    INVALID = "invalid"  # the provider rejects the key
    UNREACHABLE = "unreachable"  # the last check got no usable answer (the state before stands)

    @property
    def usable(self) -> bool:
        return self not in (KeyState.EMPTY, KeyState.INVALID)


@dataclass(frozen=True)
class Reading:
    """What an account check read: credits left (ours: 1 = $0.01)."""

    credits: float
    flagged_low: bool = False  # the provider's own low-balance flag (AI/ML API)


@dataclass(frozen=True)
class AccountKey:
    """One configured key, as the checks know it: never its value."""

    provider: str  # "bfl" or "aiml"
    position: int  # 1-based among the provider's keys: the metrics' `key` label
    setting: str  # how an admin finds it: "BFL_API_KEY", "BFL_API_KEYS key 2", ...
    key_id: str  # the engine's fingerprint of the key (bot.jobs.claims.key_fingerprint)
    read: Callable[[], Awaitable[Reading]] = field(repr=False)

    @property
    def label(self) -> str:
        return str(self.position)


@dataclass(frozen=True)
class KeyStatus:
    state: KeyState = KeyState.UNCHECKED
    credits: float | None = None
    http_status: int | None = None  # the rejection's status (401/403), for the message
    # The key's last answered state: an unanswered check keeps it, so readiness keeps to
    # what is known.
    known: KeyState = KeyState.UNCHECKED

    @property
    def usable(self) -> bool:
        return self.known.usable


# --------------------------------------------------------------------------- the keys
def account_keys(settings: Settings, keys: Iterable[ProviderKey]) -> list[AccountKey]:
    """The engine's keys (services.build_providers) with the settings they came from, in the
    same order as `Settings.bfl_keys()`: BFL_API_KEY first, then BFL_API_KEYS."""
    names: dict[str, list[str]] = {"bfl": [], "aiml": ["AIML_API_KEY"]}
    if settings.bfl_api_key is not None:
        names["bfl"].append("BFL_API_KEY")
    if settings.bfl_api_keys is not None:
        count = len(settings.bfl_keys()) - len(names["bfl"])
        names["bfl"] += [f"BFL_API_KEYS key {n}" for n in range(1, count + 1)]
    found: list[AccountKey] = []
    positions: dict[str, int] = {}
    for key in keys:
        position = positions[key.provider] = positions.get(key.provider, 0) + 1
        known = names.get(key.provider, [])
        setting = known[position - 1] if position <= len(known) else f"{key.provider} {position}"
        found.append(AccountKey(key.provider, position, setting, key.key_id, _reader(key.client)))
    return found


def _reader(client: object) -> Callable[[], Awaitable[Reading]]:
    if isinstance(client, BFLClient):

        async def bfl() -> Reading:
            return Reading(await client.credits())

        return bfl
    if isinstance(client, AIMLClient):

        async def aiml() -> Reading:
            balance = await client.balance()
            return Reading(balance.credits, flagged_low=balance.low)

        return aiml
    raise TypeError(f"no account check for {type(client).__name__}")


async def read_status(key: AccountKey, low_balance: float) -> tuple[KeyStatus, str | None]:
    """One check of one key: its status, and what went wrong when it got no answer."""
    try:
        reading = await key.read()
    except ProviderKeyRejected:
        return KeyStatus(KeyState.INVALID, http_status=401), None
    except ProviderAccessDenied:
        return KeyStatus(KeyState.INVALID, http_status=403), None
    except InsufficientCredits:  # BFL 402, the AI/ML API's 403 "out of credits"
        return KeyStatus(KeyState.EMPTY, credits=0.0), None
    except ProviderError as exc:
        return KeyStatus(KeyState.UNREACHABLE), str(exc)[:200]
    except httpx.HTTPError as exc:  # e.g. a body that would not decode
        return KeyStatus(KeyState.UNREACHABLE), type(exc).__name__
    credits = reading.credits
    if credits <= 0:
        state = KeyState.EMPTY
    elif credits < low_balance or reading.flagged_low:
        state = KeyState.LOW
    else:
        state = KeyState.OK
    return KeyStatus(state, credits=credits), None


def describe(
    key: AccountKey, status: KeyStatus, low_balance: float, problem: str | None = None
) -> str:
    """The one line an admin reads about a key (log and `fluxcord doctor`)."""
    provider = PROVIDER_NAMES.get(key.provider, key.provider)
    dashboard = DASHBOARDS.get(key.provider, "the provider's dashboard")
    account = "the " + ACCOUNTS.get(key.provider, "provider account")
    state = status.state
    if state is KeyState.INVALID and status.http_status == 403:
        return (
            f"{key.setting} was refused by {provider} (403): the key has no access; "
            f"check it in {dashboard}"
        )
    if state is KeyState.INVALID:
        return (
            f"{key.setting} was rejected by {provider} ({status.http_status or 401}): "
            f"check the key in {dashboard}"
        )
    if state is KeyState.EMPTY:
        return f"{key.setting}: {account} has no credits left: top it up in {dashboard}"
    credits = f"{status.credits:,.0f} credits" if status.credits is not None else "credits"
    if state is KeyState.LOW:
        why = (
            f"below LOW_BALANCE_CREDITS={low_balance:g}"
            if status.credits is not None and status.credits < low_balance
            else f"{provider} flags the balance as low"
        )
        return f"{key.setting}: {account} is low on credits ({credits} left, {why})"
    if state is KeyState.UNREACHABLE:
        return f"{key.setting}: could not check the key at {provider} ({problem or 'no answer'})"
    if state is KeyState.OK:
        return f"{key.setting}: {provider} accepts the key ({credits} left)"
    return f"{key.setting}: not checked yet"


async def check_keys(
    keys: Iterable[AccountKey], low_balance: float
) -> list[tuple[AccountKey, KeyStatus, str | None]]:
    """Every key checked once, side by side (for `fluxcord doctor`)."""
    keys = list(keys)
    results = await asyncio.gather(*(read_status(key, low_balance) for key in keys))
    return [(key, status, problem) for key, (status, problem) in zip(keys, results, strict=True)]


# --------------------------------------------------------------------------- the monitor
class AccountMonitor:
    """Checks every key at start and then every `interval` seconds; keeps the last status
    of each for readiness, the metrics and the log (see the module docstring)."""

    def __init__(
        self,
        keys: Iterable[AccountKey],
        *,
        metrics: Metrics,
        low_balance: float,
        interval: float,
    ) -> None:
        self.keys = list(keys)
        self.interval = interval
        self._metrics = metrics
        self._low_balance = low_balance
        self._status: dict[AccountKey, KeyStatus] = {key: KeyStatus() for key in self.keys}
        self._by_id = {key.key_id: key for key in self.keys}
        self._task: asyncio.Task[None] | None = None
        self._checked = asyncio.Event()

    def start(self) -> None:
        if self._task is None and self.keys:
            self._task = asyncio.get_running_loop().create_task(
                repeat(self.check_all, lambda: self.interval, what="checking the provider keys"),
                name="provider-key-checks",
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def wait_checked(self) -> None:
        """Until a first round of checks has finished (tests, start-up order)."""
        if self.keys:
            await self._checked.wait()

    async def check_all(self) -> None:
        results = await check_keys(self.keys, self._low_balance)
        for key, status, problem in results:
            self._record(key, status, problem)
        self._checked.set()

    def key_rejected_in_use(self, key_id: str) -> None:
        """The engine met a 401 with this key (a member's request failed on it): the same
        line and readiness as a failed check, without waiting for the next round."""
        key = self._by_id.get(key_id)
        if key is not None:
            self._record(key, KeyStatus(KeyState.INVALID, http_status=401), None)

    def status(self, key: AccountKey) -> KeyStatus:
        return self._status[key]

    def usable(self, provider: str) -> bool:
        """Whether one of the provider's keys is not known to be bad."""
        return any(self._status[k].usable for k in self.keys if k.provider == provider)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per provider: usable or not, and each key's state (for `/readyz`; no secrets)."""
        providers: dict[str, dict[str, Any]] = {}
        for key in self.keys:
            status = self._status[key]
            entry = providers.setdefault(key.provider, {"usable": False, "keys": []})
            entry["usable"] = entry["usable"] or status.usable
            entry["keys"].append(
                {
                    "key": key.label,
                    "setting": key.setting,
                    "state": status.state.value,
                    "credits": status.credits,
                }
            )
        return providers

    def _record(self, key: AccountKey, new: KeyStatus, problem: str | None) -> None:
        old = self._status[key]
        if new.state is KeyState.UNREACHABLE:
            new = KeyStatus(KeyState.UNREACHABLE, credits=old.credits, known=old.known)
        else:
            new = KeyStatus(new.state, new.credits, new.http_status, known=new.state)
        self._status[key] = new
        if new.state is not KeyState.UNREACHABLE:
            valid = new.state is not KeyState.INVALID
            self._metrics.provider_key_checked(
                key.provider, key.label, valid=valid, credits=new.credits
            )
        if new.state is old.state or (old.state is KeyState.UNREACHABLE and new.state is old.known):
            return  # said once already (an unanswered check in between changes nothing)
        line = describe(key, new, self._low_balance, problem)
        if new.state in (KeyState.INVALID, KeyState.EMPTY):
            log.error("%s", line)
        elif new.state in (KeyState.LOW, KeyState.UNREACHABLE):
            log.warning("%s", line)
        else:
            log.info("%s", line)
