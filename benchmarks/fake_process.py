"""Run a fake portal in its own process (so CPU figures are the bot's alone) and a measured coroutine beside it."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any


def beside_fake(
    serve: Callable[[int, Connection], None], users: int, work: Callable[[str], Awaitable[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start `serve(users, conn)` in a spawned process; it sends its URL, then its counts when told "stop".

    Returns (what `work(url)` measured, what the fake counted).
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(users, child), daemon=True)
    proc.start()
    try:
        url = parent.recv()
        figures = asyncio.run(work(url))
        parent.send("stop")
        server = parent.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    return figures, server
