# Fluxcord: slim Python, non-root, data on a volume.
# WEB_HOST=0.0.0.0 is the container's own address, so a proxy or a `-p 127.0.0.1:8080:8080`
# mapping can reach the webhooks. /healthz and /metrics answer there too and need no login:
# publish the port on the host's loopback only, or set WEB_HOST=127.0.0.1 when nothing outside
# the container needs it (README, "Operating it").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/data/fluxcord.sqlite3 \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8080

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fluxcord \
    && mkdir /data && chown fluxcord:fluxcord /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
# Editable install: the package runs from /app, next to its migrations/ folder. With the
# PostgreSQL driver, so the same image runs one process on SQLite or several on PostgreSQL.
RUN pip install -e ".[postgres]"

USER fluxcord
VOLUME ["/data"]
# The bot's web server: BFL webhooks (publish it only behind a proxy that forwards just
# /webhooks/bfl/), /healthz, /metrics (private).
EXPOSE 8080
# The slim image has no curl: Python's urllib it is. A 503 raises, so the exit code is 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEB_PORT', '8080'), timeout=4)"]
CMD ["python", "-m", "bot"]
