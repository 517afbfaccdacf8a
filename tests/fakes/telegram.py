"""A fake Telegram Bot API speaking the real wire format: form bodies in, real HTTP statuses out."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

from tests.fakes.server import LoopbackServer, mock_transport

BOT_ID = 123456
FAKE_TOKEN = f"{BOT_ID}:FAKE-token_abcdefghijklmnopqrstuvwxyz012"


@dataclass
class Call:
    """One request the bot made: method name (case as sent) and decoded parameters."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int = 0  # the HTTP status the fake answered with


def visible_length(text: str) -> int:
    """Length Telegram counts: after HTML entity parsing (tags do not count, &lt; counts as 1)."""
    return len(html.unescape(re.sub(r"<[^>]*>", "", text)))


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


class FakeTelegram:
    """Stateful fake of the Bot API: queues updates, records calls, plays scripted failures."""

    def __init__(self, token: str = FAKE_TOKEN, *, enforce_limits: bool = False) -> None:
        self.token = token
        self.calls: list[Call] = []
        self._updates: deque[dict[str, Any]] = deque()
        self._next_update_id = 1
        self._next_message_id = 1000
        self._cond = threading.Condition()
        self.blocked_chats: set[int] = set()
        # method (lower case) -> list of scripted replies consumed one per call: (status, body) or a callable
        self.scripted: dict[str, deque[Any]] = {}
        self.enforce_limits = enforce_limits
        self.overall_per_second = 30
        self.per_chat_interval = 1.0
        self._recent: deque[float] = deque()
        self._last_per_chat: dict[int, float] = {}
        self.too_many_requests = 0
        self.get_updates_delay_cap = 10.0
        self.token_rejected = False
        self.send_delay = 0.0  # seconds each sendMessage takes to answer
        # Groups, supergroups and channels: chat_id -> {"type", "title", "username", "is_forum", "members"}
        # (members: telegram_user_id -> status as getChatMember answers it).
        self.chats: dict[int, dict[str, Any]] = {}
        # A group upgraded to a supergroup: old chat_id -> new; a send to the old one answers 400.
        self.migrated: dict[int, int] = {}
        self._local = threading.local()

    # ---- wiring ------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """In-process transport for PTB's HTTPXRequest."""
        return mock_transport(self.handle)

    def serve(self) -> LoopbackServer:
        """The same fake on 127.0.0.1:0."""
        return LoopbackServer(self.handle)

    # ---- scripting ---------------------------------------------------------------------------

    def script(self, method: str, *replies: Any) -> None:
        """Queue replies for the next calls of a method: (status, description[, retry_after]) or callables."""
        self.scripted.setdefault(method.lower(), deque()).extend(replies)

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates."""
        with self._cond:
            update = {"update_id": self._next_update_id, **update}
            self._next_update_id += 1
            self._updates.append(update)
            self._cond.notify_all()
        return update

    def drop_updates(self) -> None:
        """Forget queued updates (already handled directly by the test)."""
        with self._cond:
            self._updates.clear()

    def push_many(self, *updates: dict[str, Any]) -> list[dict[str, Any]]:
        """Queue several updates at once, so that one getUpdates answer carries them all."""
        with self._cond:
            queued = []
            for update in updates:
                queued.append({"update_id": self._next_update_id, **update})
                self._next_update_id += 1
            self._updates.extend(queued)
            self._cond.notify_all()
        return queued

    # ---- chats -------------------------------------------------------------------------------

    def add_group(
        self,
        chat_id: int,
        members: dict[int, str] | None = None,
        *,
        chat_type: str = "group",
        title: str = "Team",
        username: str | None = None,
        is_forum: bool = False,
    ) -> dict[str, Any]:
        """A group, supergroup or channel with members (telegram_user_id -> 'member', 'administrator', 'creator', 'left')."""
        chat = {"type": chat_type, "title": title, "username": username, "is_forum": is_forum, "members": dict(members or {})}
        with self._cond:
            self.chats[chat_id] = chat
        return chat

    def migrate(self, old_chat_id: int, new_chat_id: int) -> None:
        """The group becomes a supergroup: its members move; sends to the old id answer 400 with migrate_to_chat_id."""
        with self._cond:
            old = self.chats.get(old_chat_id, {"title": "Team", "members": {}})
            self.chats[new_chat_id] = {**old, "type": "supergroup"}
            self.migrated[old_chat_id] = new_chat_id

    def _chat(self, chat_id: int, chat_type: str) -> dict[str, Any]:
        """A Chat object for an update."""
        known = self.chats.get(chat_id)
        if known is None:
            chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
            if chat_type != "private":
                chat["title"] = "Team"
            return chat
        chat = {"id": chat_id, "type": known["type"], "title": known["title"]}
        if known.get("username"):
            chat["username"] = known["username"]
        if known.get("is_forum"):
            chat["is_forum"] = True
        return chat

    # ---- update builders ---------------------------------------------------------------------

    @staticmethod
    def user(telegram_user_id: int, language_code: str | None = "en") -> dict[str, Any]:
        """A Telegram User object."""
        user: dict[str, Any] = {"id": telegram_user_id, "is_bot": False, "first_name": f"U{telegram_user_id}"}
        if language_code:
            user["language_code"] = language_code
        return user

    def message(
        self,
        telegram_user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        language_code: str | None = "en",
        thread_id: int | None = None,
        sender_chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A message update; a leading /command gets its bot_command entity; `thread_id` puts it in a forum topic."""
        chat_id = telegram_user_id if chat_id is None else chat_id
        chat = self._chat(chat_id, chat_type)
        msg: dict[str, Any] = {
            "message_id": self._new_message_id(),
            "date": int(time.time()),
            "chat": chat,
            "from": self.user(telegram_user_id, language_code),
            "text": text,
        }
        if text.startswith("/"):
            length = len(text.split()[0]) if text.split() else 1
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if sender_chat is not None:
            msg["sender_chat"] = sender_chat
        return {"message": msg}

    def migration(self, old_chat_id: int, new_chat_id: int, telegram_user_id: int) -> dict[str, Any]:
        """The service message in the old group saying it became a supergroup."""
        return {
            "message": {
                "message_id": self._new_message_id(),
                "date": int(time.time()),
                "chat": {"id": old_chat_id, "type": "group", "title": "Team"},
                "from": self.user(telegram_user_id),
                "migrate_to_chat_id": new_chat_id,
            }
        }

    def group_member(self, chat_id: int, status: str, by: int) -> dict[str, Any]:
        """A my_chat_member update in a group: the bot 'left'/'kicked' (removed) or 'member' (added back)."""
        bot = {"id": BOT_ID, "is_bot": True, "first_name": "TestBot", "username": "test_bot"}
        old = "member" if status in ("left", "kicked") else "left"
        new: dict[str, Any] = {"status": status, "user": bot}
        if status == "kicked":
            new["until_date"] = 0
        return {
            "my_chat_member": {
                "chat": self._chat(chat_id, "group"),
                "from": self.user(by),
                "date": int(time.time()),
                "old_chat_member": {"status": old, "user": bot},
                "new_chat_member": new,
            }
        }

    def callback(
        self, telegram_user_id: int, data: str, message_id: int, *, chat_id: int | None = None, language_code="en",
        thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A callback_query update from a button under message_id (in a forum topic with `thread_id`)."""
        chat_id = telegram_user_id if chat_id is None else chat_id
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id, "private"),
            "text": "...",
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        return {
            "callback_query": {
                "id": f"cbq{self._new_message_id()}",
                "from": self.user(telegram_user_id, language_code),
                "chat_instance": "ci1",
                "data": data,
                "message": message,
            }
        }

    def chat_member(self, telegram_user_id: int, status: str) -> dict[str, Any]:
        """A my_chat_member update: status 'kicked' when the user blocks the bot, 'member' when back."""
        old = "member" if status == "kicked" else "kicked"
        bot = {"id": BOT_ID, "is_bot": True, "first_name": "TestBot", "username": "test_bot"}
        return {
            "my_chat_member": {
                "chat": {"id": telegram_user_id, "type": "private"},
                "from": self.user(telegram_user_id),
                "date": int(time.time()),
                "old_chat_member": {"status": old, "user": bot},
                "new_chat_member": {"status": status, "user": bot, **({"until_date": 0} if status == "kicked" else {})},
                **({"old_chat_member": {"status": old, "user": bot, "until_date": 0}} if old == "kicked" else {}),
            }
        }

    # ---- assertions helpers ------------------------------------------------------------------

    def sent(self, chat_id: int | None = None, method: str = "sendMessage") -> list[dict[str, Any]]:
        """Parameters of every call of `method` that Telegram accepted (to chat_id when given)."""
        with self._cond:
            calls = list(self.calls)
        return [
            c.params
            for c in calls
            if c.method.lower() == method.lower()
            and c.status == 200
            and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    def texts(self, chat_id: int | None = None) -> list[str]:
        """Texts of messages Telegram accepted."""
        return [p["text"] for p in self.sent(chat_id)]

    def attempts(self, chat_id: int | None = None) -> list[str]:
        """Texts of every sendMessage that reached the fake, accepted or refused."""
        with self._cond:
            calls = list(self.calls)
        return [
            c.params["text"]
            for c in calls
            if c.method.lower() == "sendmessage" and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until predicate() is true (re-checked on every call), or the timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    # ---- the server --------------------------------------------------------------------------

    def _new_message_id(self) -> int:
        self._next_message_id += 1
        return self._next_message_id

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Serve one Bot API request, recording the status it answered with."""
        response = self._handle(request)
        with self._cond:
            call = getattr(self._local, "call", None)
            if call is not None:
                call.status = response.status_code
                self._local.call = None
            self._cond.notify_all()
        return response

    def _handle(self, request: httpx.Request) -> httpx.Response:
        prefix = f"/bot{self.token}/"
        path = request.url.path
        if not path.startswith(prefix):
            return self._error(401 if path.startswith("/bot") else 404, "Unauthorized" if path.startswith("/bot") else "Not Found")
        if self.token_rejected:
            return self._error(401, "Unauthorized")
        method = path[len(prefix) :]
        params = self._params(request)
        call = Call(method, params)
        self._local.call = call
        with self._cond:
            self.calls.append(call)
            self._cond.notify_all()
            scripted = self.scripted.get(method.lower())
            reply = scripted.popleft() if scripted else None
        if reply is not None:
            if callable(reply):
                result = reply(params)
                if isinstance(result, httpx.Response):
                    return result
                reply = result
            if reply is not None:
                status, description, *rest = reply
                return self._error(status, description, retry_after=rest[0] if rest else None)
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None:
            return self._error(400, f"Bad Request: method {method} is not implemented by the fake")
        return handler(params)

    @staticmethod
    def _params(request: httpx.Request) -> dict[str, Any]:
        body = request.content.decode("utf-8") if request.content else ""
        params: dict[str, Any] = {k: _decode(v) for k, v in parse_qsl(request.url.query.decode() if isinstance(request.url.query, bytes) else str(request.url.query))}
        ctype = request.headers.get("content-type", "")
        if body and ctype.startswith("application/json"):
            params.update(json.loads(body))
        elif body:
            params.update({k: _decode(v) for k, v in parse_qsl(body, keep_blank_values=True)})
        if isinstance(params.get("chat_id"), str) and params["chat_id"].lstrip("-").isdigit():
            params["chat_id"] = int(params["chat_id"])
        return params

    @staticmethod
    def _ok(result: Any) -> httpx.Response:
        return httpx.Response(200, json={"ok": True, "result": result})

    @staticmethod
    def _error(status: int, description: str, retry_after: int | None = None) -> httpx.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return httpx.Response(status, json=body)

    def _message_result(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        return {
            "message_id": params.get("message_id") or self._new_message_id(),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if isinstance(chat_id, int) and chat_id > 0 else "supergroup"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "TestBot", "username": "test_bot"},
            "text": params.get("text", ""),
        }

    def _flood(self, chat_id: Any) -> httpx.Response | None:
        if not self.enforce_limits:
            return None
        now = time.monotonic()
        with self._cond:
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            last = self._last_per_chat.get(chat_id)
            if len(self._recent) >= self.overall_per_second or (
                last is not None and now - last < self.per_chat_interval
            ):
                self.too_many_requests += 1
                return self._error(429, "Too Many Requests: retry after 1", retry_after=1)
            self._recent.append(now)
            self._last_per_chat[chat_id] = now
        return None

    def _m_getme(self, params: dict[str, Any]) -> httpx.Response:
        return self._ok(
            {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "TestBot",
                "username": "test_bot",
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    def _m_deletewebhook(self, params: dict[str, Any]) -> httpx.Response:
        return self._ok(True)

    def _m_setmycommands(self, params: dict[str, Any]) -> httpx.Response:
        return self._ok(True)

    def _m_answercallbackquery(self, params: dict[str, Any]) -> httpx.Response:
        return self._ok(True)

    def _m_getupdates(self, params: dict[str, Any]) -> httpx.Response:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), self.get_updates_delay_cap)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()
            while not self._updates:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
                while self._updates and self._updates[0]["update_id"] < offset:
                    self._updates.popleft()
            limit = int(params.get("limit") or 100)
            batch = list(self._updates)[:limit]
        return self._ok(batch)

    def _m_getchatmember(self, params: dict[str, Any]) -> httpx.Response:
        chat = self.chats.get(params.get("chat_id"))  # type: ignore[arg-type]
        if chat is None:
            return self._error(400, "Bad Request: chat not found")
        user_id = int(params.get("user_id") or 0)
        status = chat["members"].get(user_id, "left")
        member: dict[str, Any] = {"status": status, "user": self.user(user_id)}
        if status == "administrator":
            member.update({
                "can_be_edited": False, "is_anonymous": False, "can_manage_chat": True, "can_delete_messages": True,
                "can_manage_video_chats": True, "can_restrict_members": True, "can_promote_members": False,
                "can_change_info": True, "can_invite_users": True, "can_post_stories": False,
                "can_edit_stories": False, "can_delete_stories": False,
            })
        elif status == "creator":
            member["is_anonymous"] = False
        elif status == "kicked":
            member["until_date"] = 0
        return self._ok(member)

    def _m_sendmessage(self, params: dict[str, Any]) -> httpx.Response:
        if self.send_delay:
            time.sleep(self.send_delay)
        chat_id = params.get("chat_id")
        if chat_id in self.migrated:
            body = {
                "ok": False, "error_code": 400, "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": self.migrated[chat_id]},  # type: ignore[index]
            }
            return httpx.Response(400, json=body)
        if chat_id in self.blocked_chats and isinstance(chat_id, int) and chat_id < 0:
            return self._error(403, "Forbidden: bot was kicked from the group chat")
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        flood = self._flood(chat_id)
        if flood is not None:
            return flood
        if visible_length(str(params.get("text", ""))) > 4096:
            return self._error(400, "Bad Request: message is too long")
        return self._ok(self._message_result(params))

    def _m_editmessagetext(self, params: dict[str, Any]) -> httpx.Response:
        chat_id = params.get("chat_id")
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        return self._ok(self._message_result(params))
