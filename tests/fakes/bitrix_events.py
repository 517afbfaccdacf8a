"""The fake portal's outbound webhook: real form-encoded event posts to the bot's events port.

The bodies are what Bitrix24 sends (reference 3.1, 3.2): PHP-flattened keys, string values,
`undefined` for the side of a change that does not exist, `auth[...]` with the application
token and the portal's domain.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import httpx

TASK_EVENTS = ("ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE")
COMMENT_EVENTS = ("ONTASKCOMMENTADD", "ONTASKCOMMENTUPDATE", "ONTASKCOMMENTDELETE")


def event_fields(
    event: str,
    task_id: int | str,
    *,
    token: str,
    domain: str,
    ts: float | str | None = None,
    comment_id: int = 501,
) -> list[tuple[str, str]]:
    """The form fields of one event as the portal posts them."""
    name = event.upper()
    data: list[tuple[str, str]] = []
    if name == "ONTASKADD":
        data = [("data[FIELDS_BEFORE]", "undefined"), ("data[FIELDS_AFTER][ID]", str(task_id)),
                ("data[IS_ACCESSIBLE_BEFORE]", "N"), ("data[IS_ACCESSIBLE_AFTER]", "undefined")]
    elif name == "ONTASKUPDATE":
        data = [("data[FIELDS_BEFORE][ID]", str(task_id)), ("data[FIELDS_AFTER][ID]", str(task_id)),
                ("data[IS_ACCESSIBLE_BEFORE]", "undefined"), ("data[IS_ACCESSIBLE_AFTER]", "undefined")]
    elif name == "ONTASKDELETE":
        data = [("data[FIELDS_BEFORE][ID]", str(task_id)), ("data[FIELDS_AFTER]", "undefined"),
                ("data[IS_ACCESSIBLE_BEFORE]", "undefined"), ("data[IS_ACCESSIBLE_AFTER]", "N")]
    elif name == "ONTASKCOMMENTADD":
        data = [("data[FIELDS_AFTER][ID]", str(comment_id)), ("data[FIELDS_AFTER][TASK_ID]", str(task_id))]
    elif name in ("ONTASKCOMMENTUPDATE", "ONTASKCOMMENTDELETE"):
        action = "EDIT" if name == "ONTASKCOMMENTUPDATE" else "DEL"
        data = [("data[FIELDS_BEFORE][ID]", str(comment_id)), ("data[FIELDS_BEFORE][TASK_ID]", str(task_id)),
                ("data[FIELDS_AFTER][ID]", str(comment_id)), ("data[FIELDS_AFTER][TASK_ID]", str(task_id)),
                ("data[FIELDS_AFTER][ACTION]", action)]
    else:
        data = [("data[FIELDS][ID]", str(task_id))]
    return [
        ("event", name),
        ("event_handler_id", "17"),
        *data,
        ("ts", ts if isinstance(ts, str) else str(int(ts if ts is not None else time.time()))),
        ("auth[domain]", domain),
        ("auth[client_endpoint]", f"https://{domain}/rest/"),
        ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
        ("auth[member_id]", "d897063e1ce7c5eb9f04b9751eef5915"),
        ("auth[application_token]", token),
    ]


class EventPoster:
    """Posts events to the bot as the portal's queue server would; `clock` stamps their `ts`."""

    def __init__(self, url: str, token: str, domain: str, clock: Any = time.time) -> None:
        self.url = url
        self.token = token
        self.domain = domain
        self.clock = clock
        self.posted: list[tuple[str, int | str, float]] = []  # (event, task ID, wall time posted)

    def body(self, event: str, task_id: int | str, **overrides: Any) -> str:
        """One event's form body; `token`, `domain`, `ts`, `comment_id` may be overridden."""
        fields = event_fields(
            event, task_id,
            token=overrides.pop("token", self.token),
            domain=overrides.pop("domain", self.domain),
            ts=overrides.pop("ts", self.clock()),
            **overrides,
        )
        return urlencode(fields)

    async def post(self, event: str, task_id: int | str, client: httpx.AsyncClient | None = None, **overrides: Any) -> httpx.Response:
        """Post one event; the bot's answer."""
        body = self.body(event, task_id, **overrides)
        self.posted.append((event, task_id, time.monotonic()))
        return await self.raw(body.encode(), client=client)

    async def raw(
        self, body: bytes, *, content_type: str = "application/x-www-form-urlencoded", method: str = "POST",
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """Send any body (hostile-input tests)."""
        headers = {"Content-Type": content_type} if content_type else {}
        if client is not None:
            return await client.request(method, self.url, content=body, headers=headers)
        async with httpx.AsyncClient(timeout=10.0) as own:
            return await own.request(method, self.url, content=body, headers=headers)
