FROM python:3.11-slim

# tzdata: IANA zones for users' digests and quiet hours, also for zoneinfo's system lookup.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 bot \
    && mkdir -p /app/data \
    && chown bot:bot /app/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir .

USER bot
ENV PTB_TIMEDELTA=1 \
    PYTHONUNBUFFERED=1 \
    DATABASE_PATH=/app/data/bot.sqlite3
VOLUME ["/app/data"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
