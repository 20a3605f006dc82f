"""Opening the store: `open_database(target)` picks the engine from the target, a
`postgresql://` URL (PostgreSQL, for several processes) or a path (the SQLite file).
What a store offers, and how transaction bodies are written: `bot.storage.base`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from bot.errors import DatabaseUnavailable
from bot.storage.base import Backend, Database, Row, TransactionBody, Tx, is_postgres_url
from bot.storage.sqlite import SQLiteDatabase

__all__ = [
    "Backend",
    "Database",
    "Row",
    "TransactionBody",
    "Tx",
    "is_postgres_url",
    "open_database",
]


async def open_database(target: str | Path, *, migrate: bool = True) -> Database:
    if is_postgres_url(target):
        # asyncpg is an optional extra: imported only by those who use PostgreSQL.
        import asyncpg

        from bot.storage.postgres import CONNECT_TIMEOUT, PostgresDatabase

        try:
            # The pool connects only when first used: one connection now, so that a server
            # that cannot be reached or refuses us is reported here, in one line.
            probe = await asyncpg.connect(str(target), timeout=CONNECT_TIMEOUT)
            await probe.close()
            return await PostgresDatabase.connect(str(target), migrate=migrate)
        except Exception as exc:
            unavailable = _postgres_unavailable(str(target), exc)
            if unavailable is None:
                raise  # not about reaching it (a failed migration, say): the whole story
            raise unavailable from None  # the URL may hold a password: not in a traceback
    return await SQLiteDatabase.connect(target, migrate=migrate)


def postgres_location(url: str) -> tuple[str, str, str]:
    """(host:port, user, database) of a PostgreSQL URL: what messages may name (never the
    password)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.netloc.rpartition("@")[2] or query.get("host", ["localhost"])[0]
    if ":" not in host.rpartition("]")[2] and "," not in host:
        host = f"{host}:{query.get('port', ['5432'])[0]}"
    user = unquote(parts.username or "") or query.get("user", ["?"])[0]
    database = unquote(parts.path.lstrip("/")) or user
    return host, user, database


def _postgres_unavailable(url: str, exc: Exception) -> DatabaseUnavailable | None:
    """One line for the operator when PostgreSQL cannot be reached or refuses the login:
    which server, which cause, never the password. None for any other failure."""
    import asyncpg

    parts = urlsplit(url)
    host, _, database = postgres_location(url)
    kind = type(exc).__name__
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        text = (
            f"PostgreSQL at {host} has no database {database!r} ({kind}): create it, or fix"
            " the database name in DATABASE_URL"
        )
        return DatabaseUnavailable(text, exit_code=2)
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        # Covers a wrong password (InvalidPasswordError), an unknown role, and pg_hba.conf
        # refusing the connection; the server's reason names the user, not the password.
        reason = f"{kind}: {without_password(exc, parts.password)}"
        text = f"PostgreSQL at {host} refused the login ({reason}): check DATABASE_URL"
        return DatabaseUnavailable(text, exit_code=2)
    if isinstance(exc, asyncpg.ClientConfigurationError):  # e.g. an unknown sslmode
        text = f"DATABASE_URL cannot be used: {without_password(exc, parts.password)}"
        return DatabaseUnavailable(text, exit_code=2)
    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError):
        return DatabaseUnavailable(f"Cannot reach PostgreSQL at {host} ({kind}: {exc})")
    if isinstance(exc, OSError | TimeoutError):  # refused, unknown host, TLS, no answer
        return DatabaseUnavailable(f"Cannot reach PostgreSQL at {host} ({kind})")
    return None


def without_password(exc: Exception, password: str | None) -> str:
    """The error's first line, with the password blanked should it ever be quoted."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace(password, "[redacted]") if password else text
