# Fluxcord: slim Python, non-root, data on a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/data/fluxcord.sqlite3

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fluxcord \
    && mkdir /data && chown fluxcord:fluxcord /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
# Editable install: the package runs from /app, next to its migrations/ folder.
RUN pip install -e .

USER fluxcord
VOLUME ["/data"]
CMD ["python", "-m", "bot"]
