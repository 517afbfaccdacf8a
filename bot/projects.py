"""Project chats (SPEC 13): a Telegram group follows a Bitrix24 workgroup; offers, the view, the digest, re-checks.

Every state change is one unit of work: the network reads first, then one transaction that
re-reads what the decision depends on and writes the outcome with the outbox rows it causes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from telegram import InlineKeyboardMarkup

from bot import project_view, render
from bot.bitrix import INTERACTIVE_DEADLINE, BitrixClient, BitrixUser, Priority
from bot.bitrix.results import Task, Workgroup
from bot.config import Settings
from bot.errors import BitrixError
from bot.model import WORK_DAYS, UserSettings
from bot.preferences import Change
from bot.reader import SharedReads
from bot.schedule import Due, due_digests
from bot.storage import Db, OutgoingMessage, Storage, limits, links, outbox
from bot.storage import projects as store
from bot.storage import settings as user_settings
from bot.storage.projects import Binding
from bot.tasks import project_row_fits
from bot.texts import t

log = logging.getLogger(__name__)

OFFER_SECONDS = 600.0  # an offer lapses after 10 minutes
TRIES_PER_HOUR = 10
LIMIT_KIND = "project"
READ_WINDOW = 30.0  # one read per project per 30 s, shared by every chat that follows it
NAMES_SECONDS = 900.0  # names from user.get, cached 15 minutes
MAX_PAGES = 20  # 1,000 overdue tasks read at most for one view
RECHECK_EVERY = 24 * 3600.0
GONE_AFTER = 24 * 3600.0  # two empty reads at least a day apart end a binding
MANAGERS = ("A", "E")  # owner, moderator (sonet_group.user.get)
DIGEST_KIND = "project_digest"
NOTICE_KIND = "project_notice"

MemberCheck = Callable[[int, int], Awaitable[bool | None]]  # (chat_id, telegram_user_id) -> in chat; None: unknown


@dataclass(frozen=True)
class Said:
    """What to answer: a text and maybe buttons."""

    text: str
    markup: InlineKeyboardMarkup | None = None


@dataclass(frozen=True)
class ProjectRead:
    """One read of a project's overdue tasks (every row checked) and the names of the people responsible."""

    tasks: tuple[Task, ...]
    names: dict[int, str]
    short: dict[int, str]
    read_at: float
    total: int  # the list's total (more than the rows read when over MAX_PAGES pages)


class FilterIgnored(Exception):
    """A returned row is not an overdue task of this project: the portal did not apply the filter."""


def _chat_message(binding: Binding, kind: str, text: str, markup: str | None = None, not_before: float = 0.0) -> OutgoingMessage:
    return OutgoingMessage(
        binding.chat_id, None, kind, text, markup, not_before=not_before, message_thread_id=binding.message_thread_id
    )


async def suspend_binder_bindings(db: Db, telegram_user_id: int, now: float) -> int:
    """Inside /forget's transaction: suspend every binding the user made, each chat told once (SPEC 9)."""
    suspended = 0
    for binding in await store.by_binder(db, telegram_user_id):
        if binding.suspended:
            continue
        await store.set_flags(db, binding.chat_id, suspended=1)
        if not binding.removed:
            message = _chat_message(binding, NOTICE_KIND, t(binding.lang, "project_suspended", project=binding.group_name))
            await outbox.enqueue(db, [message], now)
        suspended += 1
    return suspended


class Projects:
    """The project-chat component: the handlers, its own digest job and the daily re-check call it."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        bitrix: BitrixClient,
        clock: Any,
        wake: Callable[[], None],
        on_ignored_filter: Callable[[], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._bitrix = bitrix
        self._clock = clock
        self._wake = wake
        self._on_ignored_filter = on_ignored_filter
        self._reads = SharedReads(clock, per_minute=10**9)  # keyed by group: the cap is the 30 s window
        self._names: dict[int, tuple[BitrixUser, float]] = {}  # bitrix_user_id -> (the user, read at)
        self.member_check: MemberCheck | None = None  # set when the Telegram bot exists (app.py)

    @property
    def enabled(self) -> bool:
        """Project chats are off with LINK_VERIFICATION=none (a false claim would open a project)."""
        return self._settings.link_verification != "none"

    def is_admin(self, telegram_user_id: int) -> bool:
        """A bot admin (may end bindings and change their settings)."""
        return telegram_user_id in self._settings.admin_telegram_user_ids

    # ---- binding --------------------------------------------------------------------------------

    async def offer(
        self, chat_id: int, message_thread_id: int | None, telegram_user_id: int, group_id: int, lang: str
    ) -> Said:
        """`/project <id>`: count the try, check the caller is a linked owner or moderator, store the offer."""
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            tries = await limits.count(db, LIMIT_KIND, telegram_user_id, now - 3600)
            if tries >= TRIES_PER_HOUR:
                return Said(t(lang, "project_too_many"))
            await limits.add(db, LIMIT_KIND, telegram_user_id, now)
            link = await links.get(db, telegram_user_id)
            current = await store.get(db, chat_id)
        if current is not None and current.live:
            return Said(t(lang, "project_one_per_chat", project=current.group_name))
        if link is None:
            return Said(t(lang, "project_refused"))
        group, roles = await self._group_and_roles(group_id)
        if group is None or roles.get(link.bitrix_user_id) not in MANAGERS:
            log.info("project offer refused: telegram_user_id=%d is no owner or moderator", telegram_user_id)
            return Said(t(lang, "project_refused"))
        async with self._storage.transaction() as db:
            again = await links.get(db, telegram_user_id)
            if again is None or again.bitrix_user_id != link.bitrix_user_id:
                return Said(t(lang, "project_refused"))
            current = await store.get(db, chat_id)
            if current is not None and current.live:
                return Said(t(lang, "project_one_per_chat", project=current.group_name))
            defaults = await self._defaults(db, telegram_user_id, lang)
            offer_id = await store.add_offer(
                db, chat_id, message_thread_id, (telegram_user_id, link.bitrix_user_id), (group.group_id, group.name),
                now + OFFER_SECONDS,
            )
        text = project_view.render_offer(lang, group.name, defaults, opened=group.opened and group.visible)
        return Said(text, project_view.offer_keyboard(lang, offer_id))

    async def _group_and_roles(self, group_id: int) -> tuple[Workgroup | None, dict[int, str]]:
        """The workgroup and its members' roles (raises BitrixError)."""
        group = await self._bitrix.workgroup(group_id, deadline=INTERACTIVE_DEADLINE)
        if group is None:
            return None, {}
        return group, await self._bitrix.workgroup_roles(group_id, deadline=INTERACTIVE_DEADLINE)

    async def _defaults(self, db: Db, telegram_user_id: int, lang: str) -> UserSettings:
        """A new binding's digest settings: the binder's time, zone and language; weekdays; empty skipped."""
        mine = await user_settings.get(db, telegram_user_id)
        base = UserSettings(
            timezone=self._settings.default_timezone, digest_time=self._settings.default_digest_time,
            digest_days=WORK_DAYS, language=lang,
        )
        if mine is None:
            return base
        return replace(base, timezone=mine.timezone, digest_time=mine.digest_time, language=mine.language or lang)

    async def press(self, action: str, offer_id: int, telegram_user_id: int, message_thread_id: int | None, lang: str) -> Said | None:
        """Connect or Cancel: only the caller's press counts; a lapsed offer is gone. None: not the caller's (no change)."""
        now = self._clock.timestamp()
        offer = await store.get_offer(self._storage.db, offer_id)
        if offer is not None and offer.telegram_user_id != telegram_user_id:
            return None  # only the caller's press counts, also on a lapsed offer
        if offer is None or offer.expires_at <= now:
            if offer is not None:
                async with self._storage.transaction() as db:
                    await store.delete_offer(db, offer_id)
            return Said(t(lang, "project_offer_lapsed"))
        if action == "cancel":
            async with self._storage.transaction() as db:
                await store.delete_offer(db, offer_id)
            return Said(t(lang, "project_offer_cancelled"))
        # The caller must still be an owner or moderator at this moment: read, then decide.
        group, roles = await self._group_and_roles(offer.group_id)
        async with self._storage.transaction() as db:
            fresh = await store.get_offer(db, offer_id)
            link = await links.get(db, telegram_user_id)
            if fresh is None or fresh.expires_at <= self._clock.timestamp():
                return Said(t(lang, "project_offer_lapsed"))
            if group is None or link is None or link.bitrix_user_id != fresh.bitrix_user_id or roles.get(link.bitrix_user_id) not in MANAGERS:
                await store.delete_offer(db, offer_id)
                return Said(t(lang, "project_refused"))
            current = await store.get(db, fresh.chat_id)
            if current is not None and current.live:
                await store.delete_offer(db, offer_id)
                return Said(t(lang, "project_one_per_chat", project=current.group_name))
            defaults = await self._defaults(db, telegram_user_id, lang)
            await store.bind(
                db, fresh.chat_id, message_thread_id, group.group_id, group.name, (telegram_user_id, link.bitrix_user_id),
                defaults, self._clock.timestamp(),
            )
            await store.delete_offer(db, offer_id)
            bound = await store.get(db, fresh.chat_id)
        assert bound is not None
        log.info("chat_id=%d now follows workgroup %d (binder telegram_user_id=%d)", bound.chat_id, group.group_id, telegram_user_id)
        return Said(t(bound.lang, "project_connected", project=group.name))

    # ---- who may change it ------------------------------------------------------------------------

    async def may_manage(self, binding: Binding, telegram_user_id: int) -> bool:
        """A bot admin, or a linked owner or moderator of the project at this moment (raises BitrixError)."""
        if self.is_admin(telegram_user_id):
            return True
        link = await links.get(self._storage.db, telegram_user_id)
        if link is None:
            return False
        roles = await self._bitrix.workgroup_roles(binding.group_id, deadline=INTERACTIVE_DEADLINE)
        return roles.get(link.bitrix_user_id) in MANAGERS

    async def end(self, chat_id: int, lang: str) -> Said:
        """`/project off`: the chat stops following its project."""
        async with self._storage.transaction() as db:
            existed = await store.delete(db, chat_id)
            await self._drop_queued(db, chat_id, "binding ended")
        return Said(t(lang, "project_off" if existed else "project_not_bound"))

    async def _drop_queued(self, db: Db, chat_id: int, reason: str) -> None:
        """Withdraw what is still queued to a chat (its digest log rows say dropped)."""
        queued = await outbox.queued_to_chat(db, chat_id)
        await outbox.drop(db, queued, self._clock.timestamp(), reason)
        for row_id in queued:
            await store.set_log_outcome(db, row_id, "dropped")

    async def change(self, chat_id: int, change: Callable[[UserSettings], Change]) -> Binding | None:
        """Apply a pure settings change to the chat's digest settings, re-read in the same transaction.

        A change of time, days or zone never catches up a time already past (SPEC 7): saved_at moves.
        """
        async with self._storage.transaction() as db:
            binding = await store.get(db, chat_id)
            if binding is None:
                return None
            done = change(binding.settings)
            saved_at = self._clock.timestamp() if done.digest_changed else binding.digest_saved_at
            await store.write_settings(db, chat_id, done.settings, digest_saved_at=saved_at)
            return await store.get(db, chat_id)

    # ---- the view -----------------------------------------------------------------------------

    async def read(self, group_id: int, *, priority: int = Priority.USER) -> ProjectRead:
        """The project's overdue tasks, shared by every chat that follows it for 30 s (raises BitrixError, FilterIgnored)."""

        async def fetch() -> ProjectRead:
            now = self._clock.now()
            deadline = INTERACTIVE_DEADLINE if priority == Priority.USER else None
            tasks: list[Task] = []
            total: int | None = None
            start = 0
            for _ in range(MAX_PAGES):
                page = await self._bitrix.project_overdue_page(group_id, now, start=start, deadline=deadline, priority=priority)
                if any(not project_row_fits(task, group_id, now) for task in page.tasks):
                    await self._on_ignored_filter()
                    raise FilterIgnored(group_id)
                tasks.extend(page.tasks)
                total = page.total if total is None else total
                if page.next_start is None or not page.tasks:
                    break
                start = page.next_start
            names, short = await self._names_of([t.responsible_id for t in tasks if t.responsible_id is not None])
            return ProjectRead(tuple(tasks), names, short, self._clock.timestamp(), max(total or 0, len(tasks)))

        read = await self._reads.read(group_id, "project", READ_WINDOW, fetch)
        return read.value

    async def _names_of(self, bitrix_user_ids: Sequence[int]) -> tuple[dict[int, str], dict[int, str]]:
        """Full and short names of these people, from user.get cached 15 minutes; an unreadable name is its ID."""
        now = self._clock.timestamp()
        wanted = list(dict.fromkeys(bitrix_user_ids))
        missing = [i for i in wanted if i not in self._names or now - self._names[i][1] >= NAMES_SECONDS]
        if missing:
            try:
                found = await self._bitrix.users_by_ids(missing)
            except BitrixError as err:
                log.warning("project view: names not read (%s %s)", err.kind, err.code)
                found = {}
            for bitrix_user_id, user in found.items():
                self._names[bitrix_user_id] = (user, now)
        known = {i: self._names[i][0] for i in wanted if i in self._names}
        names = {i: known[i].full_name if i in known else f"#{i}" for i in wanted}
        return names, {i: f"#{i}" for i in wanted} | render.short_names(known.values())

    async def view(self, binding: Binding) -> Said:
        """`/project` in a bound chat and its refresh button (raises BitrixError, FilterIgnored)."""
        read = await self.read(binding.group_id)
        lang = binding.lang
        text = project_view.render_view(
            lang, binding.group_id, binding.group_name, read.tasks, read.names, read.short, total=read.total,
            portal_url=self._settings.bitrix24_portal_url, now=self._clock.now(),
            read_at=datetime.fromtimestamp(read.read_at, UTC).astimezone(binding.settings.tz()),
        )
        return Said(text, project_view.refresh_keyboard(lang))

    # ---- the binder stays accountable ------------------------------------------------------------

    async def _binder_fits(self, binding: Binding) -> bool | None:
        """Whether the binder is still linked, active, owner or moderator and in the chat; None when unknown now."""
        link = await links.get(self._storage.db, binding.binder_telegram_user_id)
        if link is None or link.bitrix_user_id != binding.binder_bitrix_user_id:
            return False
        try:
            active = await self._bitrix.users_by_ids([link.bitrix_user_id])
            if link.bitrix_user_id not in active:
                return False
            roles = await self._bitrix.workgroup_roles(binding.group_id)
        except BitrixError as err:
            log.warning("project re-check of chat_id=%d not possible now: %s %s", binding.chat_id, err.kind, err.code)
            return None
        if roles.get(link.bitrix_user_id) not in MANAGERS:
            return False
        if self.member_check is None:
            return None
        return await self.member_check(binding.chat_id, binding.binder_telegram_user_id)

    async def _suspend(self, binding: Binding, why: str) -> bool:
        """Suspend a binding whose binder is no longer accountable, telling the chat once (same transaction)."""
        async with self._storage.transaction() as db:
            fresh = await store.get(db, binding.chat_id)
            if fresh is None or fresh.suspended or fresh.binder_telegram_user_id != binding.binder_telegram_user_id:
                return False
            await store.set_flags(db, binding.chat_id, suspended=1, checked_at=self._clock.timestamp())
            if not fresh.removed:
                await outbox.enqueue(
                    db, [_chat_message(fresh, NOTICE_KIND, t(fresh.lang, "project_suspended", project=fresh.group_name))],
                    self._clock.timestamp(),
                )
        log.info("binding of chat_id=%d suspended: %s", binding.chat_id, why)
        self._wake()
        return True

    async def recheck(self) -> int:
        """Daily: re-check each binder and whether the project is still there; returns how many bindings changed."""
        now = self._clock.timestamp()
        changed = 0
        for binding in await store.all_bindings(self._storage.db):
            if now - binding.checked_at < RECHECK_EVERY - 60:
                continue
            try:
                changed += await self._recheck_one(binding, now)
            except asyncio.CancelledError:
                raise
            except Exception:  # one chat's failure must not stop the others
                log.error("project re-check of chat_id=%d failed", binding.chat_id, exc_info=True)
        return changed

    async def _recheck_one(self, binding: Binding, now: float) -> int:
        try:
            group = await self._bitrix.workgroup(binding.group_id)
        except BitrixError as err:
            log.warning("project re-check: workgroup %d not read (%s %s)", binding.group_id, err.kind, err.code)
            return 0  # errors never end a binding
        if group is None:
            return await self._maybe_gone(binding, now)
        changed = 0
        if binding.live:
            fits = await self._binder_fits(binding)
            if fits is False and await self._suspend(binding, "daily re-check"):
                changed = 1
        async with self._storage.transaction() as db:
            fresh = await store.get(db, binding.chat_id)
            if fresh is not None and fresh.group_id == binding.group_id:
                await store.set_flags(db, binding.chat_id, checked_at=now, gone_since=None, group_name=group.name)
        return changed

    async def _maybe_gone(self, binding: Binding, now: float) -> int:
        """The project read as empty: the first time is noted, a second one a day later ends the binding."""
        async with self._storage.transaction() as db:
            fresh = await store.get(db, binding.chat_id)
            if fresh is None or fresh.group_id != binding.group_id:
                return 0
            if fresh.gone_since is None or now - fresh.gone_since < GONE_AFTER:
                await store.set_flags(db, binding.chat_id, checked_at=now, gone_since=fresh.gone_since or now)
                return 0
            await store.delete(db, binding.chat_id)
            if not fresh.removed:
                await outbox.enqueue(
                    db, [_chat_message(fresh, NOTICE_KIND, t(fresh.lang, "project_gone", project=fresh.group_name))], now
                )
        log.info("binding of chat_id=%d ended: workgroup %d is gone", binding.chat_id, binding.group_id)
        self._wake()
        return 1

    # ---- chat life --------------------------------------------------------------------------------

    async def chat_membership(self, chat_id: int, present: bool) -> bool:
        """The bot was removed from a chat (or a send got 403) or added back: the binding follows."""
        async with self._storage.transaction() as db:
            binding = await store.get(db, chat_id)
            if binding is None or binding.removed == (not present):
                return False
            await store.set_flags(db, chat_id, removed=0 if present else 1)
            if not present:
                await self._drop_queued(db, chat_id, "removed from the chat")
        log.info("chat_id=%d: the bot was %s; its binding is %s", chat_id, "added back" if present else "removed",
                 "active again" if present else "inactive")
        return True

    async def migrate(self, old_chat_id: int, new_chat_id: int) -> bool:
        """A group became a supergroup: the binding, its digest log and queued messages move to the new id."""
        async with self._storage.transaction() as db:
            if await store.get(db, new_chat_id) is not None:
                return False  # already moved (the service message and a failed send both tell it)
            moved = await store.move_chat(db, old_chat_id, new_chat_id)
        if moved:
            log.info("chat_id=%d became supergroup chat_id=%d: binding moved", old_chat_id, new_chat_id)
            self._wake()
        return moved

    # ---- the project digest -------------------------------------------------------------------

    def _due(self, binding: Binding, last: Any, now: datetime) -> Due | None:
        return due_digests(binding.settings, now, last, datetime.fromtimestamp(binding.digest_saved_at, UTC))

    async def digest_tick(self) -> int:
        """Queue every project digest that is due (exactly once per local date, SPEC 7 rules); returns how many."""
        now = self._clock.now()
        due: list[tuple[Binding, Due]] = []
        for binding in await store.all_bindings(self._storage.db):
            if not binding.live:
                continue
            try:
                found = self._due(binding, await store.last_date(self._storage.db, binding.chat_id), now)
            except ValueError:
                log.error("project digest: cannot schedule chat_id=%d (zone %r)", binding.chat_id, binding.settings.timezone)
                continue
            if found is None:
                continue
            if found.skip:
                await self._settle(binding, found, None, None)
            else:
                due.append((binding, found))
        queued = 0
        for binding, found in due:
            try:
                queued += await self._digest_one(binding, found)
            except asyncio.CancelledError:
                raise
            except Exception:  # one chat's failure must not stop the others
                log.error("project digest of chat_id=%d failed", binding.chat_id, exc_info=True)
        if queued:
            self._wake()
        return queued

    async def _digest_one(self, binding: Binding, found: Due) -> int:
        """Re-check the binder, read the project (shared), then decide in one transaction."""
        fits = await self._binder_fits(binding)
        if fits is False:
            await self._suspend(binding, "re-check before the digest")
            return 0
        if fits is None:
            return 0  # tried again next tick; skipped once 2 hours late
        try:
            group = await self._bitrix.workgroup(binding.group_id, priority=Priority.DIGEST)
            if group is None:
                return 0  # the daily re-check decides whether it is gone; no digest of a project not seen
            read = None if group.closed else await self.read(binding.group_id, priority=Priority.DIGEST)
        except (BitrixError, FilterIgnored) as err:
            log.warning("project digest of chat_id=%d: not read (%s)", binding.chat_id, err)
            return 0
        return await self._settle(binding, found, group, read)

    async def _settle(self, binding: Binding, found: Due, group: Workgroup | None, read: ProjectRead | None) -> int:
        """One chat's digest as one unit of work: still due as read? then skip, pause (archived) or queue it."""
        now = self._clock.now()
        async with self._storage.transaction() as db:
            fresh = await store.get(db, binding.chat_id)
            if fresh is None or not fresh.live or fresh.group_id != binding.group_id:
                return 0
            again = self._due(fresh, await store.last_date(db, fresh.chat_id), max(now, found.due_at_utc))
            if again is None or (again.local_date, again.due_at_utc) != (found.local_date, found.due_at_utc):
                return 0
            stamp = again.due_at_utc.timestamp()
            if group is not None and group.closed:
                await store.log_insert(db, fresh.chat_id, again.local_date, stamp, "skipped")
                if not fresh.archived:
                    await store.set_flags(db, fresh.chat_id, archived=1)
                    await outbox.enqueue(
                        db, [_chat_message(fresh, NOTICE_KIND, t(fresh.lang, "project_archived", project=fresh.group_name))],
                        now.timestamp(),
                    )
                return 0
            if group is not None and fresh.archived:
                await store.set_flags(db, fresh.chat_id, archived=0)
            if again.skip or read is None:
                log.info("project digest of %s for chat_id=%d skipped (%s)", again.local_date, fresh.chat_id, again.reason)
                await store.log_insert(db, fresh.chat_id, again.local_date, stamp, "skipped")
                return 0
            if not read.tasks and not fresh.settings.digest_empty:
                await store.log_insert(db, fresh.chat_id, again.local_date, stamp, "skipped", overdue=0)
                return 0
            previous = await store.last_sent_overdue(db, fresh.chat_id)
            text = project_view.render_digest(
                fresh.lang, fresh.group_id, fresh.group_name, read.tasks, read.names, read.short, previous, total=read.total,
                portal_url=self._settings.bitrix24_portal_url, now=now,
            )
            markup = project_view.refresh_keyboard(fresh.lang).to_json()
            (outbox_id,) = await outbox.enqueue(db, [_chat_message(fresh, DIGEST_KIND, text, markup, stamp)], now.timestamp())
            await store.log_insert(
                db, fresh.chat_id, again.local_date, stamp, "queued", overdue=read.total, outbox_id=outbox_id
            )
        return 1

    async def housekeeping(self, now: datetime) -> dict[str, int]:
        """Lapsed offers and project digest logs beyond 60 days."""
        async with self._storage.transaction() as db:
            offers = await store.delete_expired_offers(db, now.timestamp())
            logs = await store.delete_log_before(db, (now - timedelta(days=60)).date())
        return {"project_offers": offers, "project_digest_log": logs}
