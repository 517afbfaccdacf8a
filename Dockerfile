# Two stages: the first installs the locked dependencies (requirements.lock, hashes checked) and
# the bot into a virtual environment; the image gets only that environment, so `python -m bot`
# can import nothing but the installed package, and no sources, build/ or *.egg-info are left.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/bot
COPY requirements.lock /src/
RUN /opt/bot/bin/pip install --require-hashes -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY bot /src/bot
# pip check: the locked versions meet pyproject.toml's ranges. Then pip and setuptools go: the
# bot does not need them to run.
RUN /opt/bot/bin/pip install --no-deps /src \
    && /opt/bot/bin/pip check \
    && /opt/bot/bin/pip uninstall --yes pip setuptools

FROM python:3.11-slim

# tzdata: IANA zones for users' digests and quiet hours, also for zoneinfo's system lookup.
# noninteractive: tzdata's configuration would otherwise ask for a "Geographic area".
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 bot \
    && mkdir -p /app/data \
    && chown bot:bot /app/data

COPY --from=build /opt/bot /opt/bot
WORKDIR /app
USER bot
ENV PATH=/opt/bot/bin:$PATH \
    PTB_TIMEDELTA=1 \
    PYTHONUNBUFFERED=1 \
    DATABASE_PATH=/app/data/bot.sqlite3 \
    HEALTH_PORT=8080
VOLUME ["/app/data"]
# The same probe as docker-compose's, on whatever HEALTH_PORT says, so `docker run` has it too.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTH_PORT'], timeout=5).status == 200 else 1)"]
CMD ["python", "-m", "bot"]
