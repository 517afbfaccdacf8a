"""python -m bot runs the bot; python -m bot check checks the configuration (SPEC section 3)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO

from bot.config import Settings, SettingsError, load_from_os

log = logging.getLogger("bot")

EXIT_OK, EXIT_FATAL, EXIT_SETTINGS = 0, 1, 2


def acquire_lock(database_path: Path) -> IO[str] | None:
    """Hold an exclusive flock on <DATABASE_PATH>.lock for the life of the process, or None if taken."""
    database_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{database_path}.lock", "a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


async def _serve(settings: Settings) -> int:
    from bot.app import FatalStartupError, build_application, run
    from bot.bitrix import BitrixClient, LeakyBucket, build_http_client
    from bot.clock import Clock
    from bot.services import Services
    from bot.storage import Storage, StorageError

    try:
        storage = await Storage.open(settings.database_path)
    except StorageError as err:
        log.error("%s", err)
        return EXIT_FATAL
    http = build_http_client(settings.bitrix24_ca_file)
    try:
        bucket = LeakyBucket(settings.bitrix24_requests_per_second, settings.bitrix24_burst)
        services = Services(
            settings=settings,
            storage=storage,
            clock=Clock(),
            bitrix=BitrixClient(settings.bitrix24_webhook_url, http, bucket),
        )
        app = build_application(services)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run(app, stop)
        except FatalStartupError as err:
            log.error("%s", err)
            return EXIT_FATAL
    finally:
        await http.aclose()
        await storage.close()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 after SIGTERM/SIGINT, 2 for bad settings, 1 for a fatal start-up error."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in ("run", "check"):
        print("usage: python -m bot [check]", file=sys.stderr)
        return EXIT_SETTINGS
    os.environ.setdefault("PTB_TIMEDELTA", "1")  # RetryAfter.retry_after as a timedelta, no deprecation warning
    try:
        settings = load_from_os()
    except SettingsError as err:
        if argv and argv[0] == "check":
            for problem in err.problems:
                print(f"FAIL settings: {problem}")
            return EXIT_FATAL
        for problem in err.problems:
            print(f"settings error: {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    from bot.logs import setup_logging

    setup_logging(settings.log_level, settings.secrets)
    if argv and argv[0] == "check":
        from bot.check import run_check

        return asyncio.run(run_check(settings))
    lock = acquire_lock(settings.database_path)
    if lock is None:
        log.error("another instance is running on %s (lock %s.lock is held)", settings.database_path, settings.database_path)
        return EXIT_FATAL
    try:
        return asyncio.run(_serve(settings))
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
