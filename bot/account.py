"""Units of work on one Telegram user's account: seen, blocked, link, unlink, forget, settings, snooze.

Each public method is one decision: it re-reads what it depends on and writes, together with
the messages the change causes, inside one transaction; nothing awaits the network in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from bot import alerts as alert_rules
from bot.config import Settings
from bot.model import UserSettings
from bot.preferences import Change
from bot.projects import suspend_binder_bindings
from bot.storage import Db, OutgoingMessage, Storage, User, alerts, digests, limits, links, outbox, task_members, users
from bot.storage import projects as project_store
from bot.storage import settings as user_settings
from bot.texts import pick_language, t

log = logging.getLogger(__name__)

# What the bot stops sending when a link ends; a notice (e.g. "your link moved") still goes.
ENDS_WITH_LINK = ("alert", "digest", "quiet")
# Settings that move or stop the scheduled digest: a digest queued for later is withdrawn.
DIGEST_FIELDS = ("digest_enabled", "digest_time", "digest_days", "timezone", "pause_until")


async def drop_messages(db: Db, rows: list[tuple[int, str]], now: float, reason: str) -> None:
    """Inside a transaction: withdraw queued outbox rows (id, kind); a withdrawn digest's log says dropped."""
    await outbox.drop(db, [row_id for row_id, _ in rows], now, reason)
    for row_id, kind in rows:
        if kind == "digest":
            await digests.set_outcome(db, row_id, "dropped")
        elif kind == "project_digest":
            await project_store.set_log_outcome(db, row_id, "dropped")


class Clock(Protocol):
    """What the accounts read the time from."""

    def now(self) -> datetime:
        """The current time, UTC-aware."""
        ...

    def timestamp(self) -> float:
        """The current time as Unix seconds."""
        ...


@dataclass(frozen=True)
class Linked:
    """A link that was made: its settings and the Telegram user it moved away from, if any."""

    settings: UserSettings
    moved_from: int | None


class Taken(Exception):
    """LINK_VERIFICATION=none and the Bitrix24 user is linked to someone else."""


class Accounts:
    """The decisions about one user's account, each in one transaction."""

    def __init__(self, settings: Settings, storage: Storage, clock: Clock, wake: Callable[[], None]) -> None:
        self._settings = settings
        self._storage = storage
        self._clock = clock
        self.wake = wake
        self.link_ended: list[Callable[[int], None]] = []  # drops in-memory caches of a link (Telegram ID)

    def language(self, choice: str | None, telegram_code: str | None) -> str:
        """The one rule for a user's language: /language, else Telegram's when en or ru, else the default."""
        return pick_language(choice, telegram_code, self._settings.default_language)

    def language_of(self, user: User | None, telegram_code: str | None = None) -> str:
        """The language of a stored user; `telegram_code` (from the update at hand) wins over the stored one."""
        return self.language(user.language if user else None, telegram_code or (user.language_code if user else None))

    def may_message(self, telegram_user_id: int) -> bool:
        """Whether the allow-list lets the bot write to this user (admins always)."""
        return self._settings.is_allowed(telegram_user_id)

    async def notice(self, db: Db, telegram_user_id: int, key: str) -> bool:
        """Inside a transaction: queue a notice to a user in their language; False if they cannot get one."""
        user = await users.get(db, telegram_user_id)
        if user is None or user.blocked or not self.may_message(telegram_user_id):
            return False
        text = t(self.language_of(user), key)
        await outbox.enqueue(db, [OutgoingMessage(user.chat_id, telegram_user_id, "notice", text)], self._clock.timestamp())
        return True

    # ---- presence ----------------------------------------------------------------------------

    async def seen(self, telegram_user_id: int, chat_id: int, language_code: str | None) -> bool:
        """A user wrote to the bot: record them and unblock; True if they had blocked it."""
        async with self._storage.transaction() as db:
            was_blocked = await users.upsert_seen(db, telegram_user_id, chat_id, language_code, self._clock.timestamp())
            if was_blocked:
                await alerts.request_baseline(db, telegram_user_id)  # SPEC 7: reactivation only sets the state
        return was_blocked

    async def set_blocked(self, telegram_user_id: int, blocked: bool) -> bool:
        """The user blocked (or unblocked) the bot; True if that changed anything."""
        async with self._storage.transaction() as db:
            changed = await users.set_blocked(db, telegram_user_id, blocked)
            if changed and blocked:
                await self._drop_queued(db, telegram_user_id, None, "blocked")
            if changed and not blocked:
                await alerts.request_baseline(db, telegram_user_id)
        return changed

    async def _drop_queued(self, db: Db, telegram_user_id: int, kinds: tuple[str, ...] | None, reason: str) -> None:
        rows = await outbox.queued_for(db, telegram_user_id, kinds)
        await drop_messages(db, [(row_id, kind) for row_id, kind, _ in rows], self._clock.timestamp(), reason)

    # ---- links -------------------------------------------------------------------------------

    async def link(
        self, telegram_user_id: int, bitrix_user_id: int, full_name: str, defaults: UserSettings, *, refuse_taken: bool
    ) -> Linked:
        """Link (moving the link from another Telegram account unless refuse_taken); raises Taken."""
        async with self._storage.transaction() as db:
            linked = await self.link_in(db, telegram_user_id, bitrix_user_id, full_name, defaults, refuse_taken=refuse_taken)
        self.wake()
        return linked

    async def link_in(
        self, db: Db, telegram_user_id: int, bitrix_user_id: int, full_name: str, defaults: UserSettings, *, refuse_taken: bool
    ) -> Linked:
        """Inside the caller's transaction: make the link; the old holder is told in the same transaction."""
        now = self._clock.timestamp()
        previous = await links.holder(db, bitrix_user_id)
        moved_from = previous if previous is not None and previous != telegram_user_id else None
        if moved_from is not None:
            if refuse_taken:
                raise Taken(bitrix_user_id)
            await self._end_link(db, moved_from)
            await self.notice(db, moved_from, "link_moved_away")
        await self._end_link(db, telegram_user_id)
        # SPEC 6: every new link starts from the defaults; an earlier settings row keeps its language.
        before = await user_settings.get(db, telegram_user_id)
        fresh = replace(defaults, language=before.language if before else None)
        await user_settings.write(db, telegram_user_id, fresh, digest_saved_at=now)
        await digests.forget_other_accounts(db, telegram_user_id, bitrix_user_id)
        await links.insert(db, telegram_user_id, bitrix_user_id, full_name, now)
        await limits.delete_code(db, telegram_user_id)
        return Linked(settings=fresh, moved_from=moved_from)

    async def _end_link(self, db: Db, telegram_user_id: int) -> bool:
        self._link_ended(telegram_user_id)
        await self._forget_task_members(db, telegram_user_id)
        existed = await links.delete(db, telegram_user_id)
        await alerts.delete_states(db, telegram_user_id)
        await alerts.delete_snapshots(db, telegram_user_id)
        await self._drop_queued(db, telegram_user_id, ENDS_WITH_LINK, "unlinked")
        return existed

    async def unlink(self, telegram_user_id: int, *, notice: str | None = None, only_if: int | None = None) -> bool:
        """End a user's link and every pending message about it (settings stay); True if there was one.

        `notice` is queued to the user in the same transaction (admin unlink, inactive account);
        with `only_if`, only a link to that Bitrix24 user is ended.
        """
        async with self._storage.transaction() as db:
            if only_if is not None:
                current = await links.get(db, telegram_user_id)
                if current is None or current.bitrix_user_id != only_if:
                    return False
            existed = await self._end_link(db, telegram_user_id)
            await limits.delete_code(db, telegram_user_id)
            told = existed and notice is not None and await self.notice(db, telegram_user_id, notice)
        if told:
            self.wake()
        return existed

    async def unlink_bitrix_user(self, bitrix_user_id: int, *, notice: str | None, unless: int | None = None) -> int | None:
        """Admin: free a Bitrix24 account; returns the Telegram user it was linked to (told unless it is `unless`)."""
        async with self._storage.transaction() as db:
            holder = await links.holder(db, bitrix_user_id)
            if holder is None:
                return None
            await self._end_link(db, holder)
            await limits.delete_code(db, holder)
            told = notice is not None and holder != unless and await self.notice(db, holder, notice)
        if told:
            self.wake()
        return holder

    def _link_ended(self, telegram_user_id: int) -> None:
        """In-memory caches about the user's link (the team view, SPEC 12) are dropped with it."""
        for drop in self.link_ended:
            drop(telegram_user_id)

    async def forget(self, telegram_user_id: int) -> None:
        """Delete every row about a user except limit records (which expire on their own); suspend their bindings."""
        self._link_ended(telegram_user_id)
        async with self._storage.transaction() as db:
            await self._forget_task_members(db, telegram_user_id)
            await users.delete(db, telegram_user_id)
            told = await suspend_binder_bindings(db, telegram_user_id, self._clock.timestamp())
        if told:
            self.wake()

    @staticmethod
    async def _forget_task_members(db: Db, telegram_user_id: int) -> None:
        """The task-member cache keeps linked people only (SPEC 9): a link that ends takes its rows."""
        link = await links.get(db, telegram_user_id)
        if link is not None:
            await task_members.delete_user(db, link.bitrix_user_id)

    # ---- settings ----------------------------------------------------------------------------

    async def change_settings(
        self, telegram_user_id: int, change: Callable[[UserSettings], Change], *, create: UserSettings | None = None
    ) -> UserSettings | None:
        """Apply a pure settings change to the stored settings, re-read in the same transaction.

        Returns the new settings, or None when the user has no settings row (and `create` is None).
        """
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            before = await user_settings.get(db, telegram_user_id)
            if before is None:
                if create is None or await users.get(db, telegram_user_id) is None:
                    return None
                before = create
            result = change(before)
            after = result.settings
            saved_at = await user_settings.saved_at(db, telegram_user_id)
            if any(getattr(before, f) != getattr(after, f) for f in DIGEST_FIELDS):
                await self._withdraw_later_digests(db, telegram_user_id, now)
            stamp = now if result.digest_changed or saved_at is None else saved_at
            await user_settings.write(db, telegram_user_id, after, digest_saved_at=stamp)
            if "*" in result.rebaseline:
                await alerts.request_baseline(db, telegram_user_id)
            elif result.rebaseline:
                await alerts.request_baseline(db, telegram_user_id, result.rebaseline)
            await alerts.keep_only(db, telegram_user_id, after.thresholds)
        return after

    async def _withdraw_later_digests(self, db: Db, telegram_user_id: int, now: float) -> None:
        """A digest queued for a time still to come is withdrawn with its log row (the date is free again)."""
        later = [r for r in await outbox.queued_for(db, telegram_user_id, ("digest",)) if r[2] > now]
        await outbox.drop(db, [r[0] for r in later], now, "settings changed")
        for row_id, _, _ in later:
            await digests.withdraw(db, row_id)

    async def snooze(self, telegram_user_id: int, counter: str, kind: alert_rules.SnoozeKind) -> tuple[datetime, UserSettings] | None:
        """Snooze one counter's alerts (1 h or until tomorrow); None when the user or counter is not there."""
        now = self._clock.now()
        async with self._storage.transaction() as db:
            current = await user_settings.get(db, telegram_user_id)
            if current is None or counter not in current.thresholds or await links.get(db, telegram_user_id) is None:
                return None
            until = alert_rules.snooze_until(current, now, kind, default_digest_time=self._settings.default_digest_time)
            if not await alerts.set_snooze(db, telegram_user_id, counter, until):
                return None
        return until, current
