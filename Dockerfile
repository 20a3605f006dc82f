# Fluxcord: the locked dependencies and the built wheel in a virtual environment, copied
# into a slim image that runs as a non-root user with its data on a volume.
#   docker build -t fluxcord .
#   docker run -d --env-file .env -v fluxcord-data:/data -p 127.0.0.1:8080:8080 fluxcord
# or compose.yaml (SQLite) / compose.postgres.yaml (PostgreSQL): docs/install.md.
#
# The base image is pinned by tag and by the digest of its multi-architecture index: a rebuild
# gets the same Python and Debian until this line is changed on purpose.

# ---- stage 1: build -------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The same uv as .ci/run (tests/unit/test_packaging.py checks they agree with each other).
ARG UV_VERSION=0.13.10
RUN python -m pip install "uv==${UV_VERSION}"

WORKDIR /src
# The lock and pyproject.toml alone first: editing the code keeps this layer, so the
# dependencies are not downloaded again. Every file is checked against the lock's hashes.
COPY pyproject.toml uv.lock ./
RUN uv export --frozen --no-emit-project --extra postgres --format requirements-txt \
        --quiet -o /tmp/locked-requirements.txt \
    && python -m venv /opt/fluxcord \
    && /opt/fluxcord/bin/pip install --require-hashes --no-deps -r /tmp/locked-requirements.txt

# Then the code, built into a wheel and installed as one (not editable): the migrations
# travel inside it as package data.
COPY README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
RUN /opt/fluxcord/bin/pip wheel --no-deps --wheel-dir /tmp/dist . \
    && /opt/fluxcord/bin/pip install --no-deps /tmp/dist/fluxcord-*.whl

# ---- stage 2: run ---------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# WEB_HOST=0.0.0.0 is the container's own address, so a port mapping can reach the webhooks;
# /livez and /readyz answer there too and need no login (/metrics needs METRICS_TOKEN from
# outside the container): publish the port on the
# host's loopback only (compose.yaml does), or put a proxy in front that forwards just
# /webhooks/bfl/.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/fluxcord/bin:$PATH \
    DATABASE_PATH=/data/fluxcord.sqlite3 \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8080

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fluxcord \
    && mkdir /data && chown fluxcord:fluxcord /data
COPY --from=build /opt/fluxcord /opt/fluxcord

USER fluxcord
WORKDIR /home/fluxcord
VOLUME ["/data"]
EXPOSE 8080
# /livez: the process and its event loop answer. Not /readyz: a provider or Discord outage
# must not get a healthy bot restarted. The slim image has no curl: Python's urllib it is.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('WEB_PORT', '8080'), timeout=4)"]
# SIGTERM (docker stop) closes cleanly within SHUTDOWN_GRACE_SECONDS (25 by default): give
# the container more than that (stop_grace_period in the compose files).
CMD ["fluxcord"]
