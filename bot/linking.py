"""Verified linking of a Telegram account to a Bitrix24 user (SPEC section 4)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from bot.account import Accounts, Linked, Taken
from bot.bitrix import INTERACTIVE_DEADLINE, BitrixClient, BitrixUser
from bot.config import Settings
from bot.model import WORK_DAYS, UserSettings, zone
from bot.parsing import LinkTarget
from bot.storage import Storage, limits, links
from bot.storage.limits import PendingCode

log = logging.getLogger(__name__)

CODE_TTL_SECONDS = 600
CODE_TRIES = 5
LOOKUPS_PER_HOUR = 10
CODES_PER_HOUR = 3
HOUR = 3600.0


class Outcome(Enum):
    """What a /link or /verify came to."""

    CODE_SENT = "code_sent"
    LINKED = "linked"
    NOT_FOUND = "not_found"
    TOO_MANY_LOOKUPS = "too_many_lookups"
    TOO_MANY_CODES = "too_many_codes"
    TAKEN = "taken"
    ALREADY_YOURS = "already_yours"
    NO_CODE = "no_code"
    EXPIRED = "expired"
    WRONG = "wrong"
    DEAD = "dead"


@dataclass(frozen=True)
class LinkResult:
    """The outcome, and for LINKED the details the confirmation shows."""

    outcome: Outcome
    user: BitrixUser | None = None
    bitrix_user_id: int | None = None
    full_name: str | None = None
    settings: UserSettings | None = None
    moved_from: int | None = None
    tries_left: int = 0


class Linker:
    """Resolves, sends and checks codes, and makes the link; every limit is checked and counted in one transaction."""

    def __init__(self, settings: Settings, storage: Storage, bitrix: BitrixClient, clock: Any, accounts: Accounts) -> None:
        self._settings = settings
        self._storage = storage
        self._bitrix = bitrix
        self._clock = clock
        self._accounts = accounts
        self._key = hashlib.sha256(b"link-code:" + settings.telegram_bot_token.encode()).digest()

    def _hash(self, telegram_user_id: int, bitrix_user_id: int, code: str) -> str:
        message = f"{telegram_user_id}:{bitrix_user_id}:{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def _resolve(self, target: LinkTarget) -> BitrixUser | None:
        if target.kind == "id":
            user = await self._bitrix.user_by_id(int(target.value), deadline=INTERACTIVE_DEADLINE)
            return user if user and user.bitrix_user_id == int(target.value) and user.active else None
        return await self._bitrix.user_by_email(str(target.value), deadline=INTERACTIVE_DEADLINE)

    async def request(self, telegram_user_id: int, account_label: str, target: LinkTarget) -> LinkResult:
        """Look up the Bitrix24 user; send a code (or link at once with LINK_VERIFICATION=none)."""
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            if await limits.count(db, "lookup", telegram_user_id, now - HOUR) >= LOOKUPS_PER_HOUR:
                return LinkResult(Outcome.TOO_MANY_LOOKUPS)
            await limits.add(db, "lookup", telegram_user_id, now)
        user = await self._resolve(target)
        if user is None:
            log.info("telegram_user_id=%d: /link found no active user", telegram_user_id)
            return LinkResult(Outcome.NOT_FOUND)
        if await links.holder(self._storage.db, user.bitrix_user_id) == telegram_user_id:
            return LinkResult(Outcome.ALREADY_YOURS, user=user)
        if self._settings.link_verification == "none":
            try:
                linked = await self._accounts.link(
                    telegram_user_id, user.bitrix_user_id, user.full_name, self.defaults_for(user.time_zone), refuse_taken=True
                )
            except Taken:
                return LinkResult(Outcome.TAKEN)
            return self._linked(telegram_user_id, user.bitrix_user_id, user.full_name, linked)
        code = f"{secrets.randbelow(1_000_000):06d}"
        code_hash = self._hash(telegram_user_id, user.bitrix_user_id, code)
        now = self._clock.timestamp()
        async with self._storage.transaction() as db:
            if (
                await limits.count(db, "code_tg", telegram_user_id, now - HOUR) >= CODES_PER_HOUR
                or await limits.count(db, "code_b24", user.bitrix_user_id, now - HOUR) >= CODES_PER_HOUR
            ):
                return LinkResult(Outcome.TOO_MANY_CODES)
            pending = PendingCode(user.bitrix_user_id, code_hash, now + CODE_TTL_SECONDS, CODE_TRIES, user.full_name, user.time_zone)
            await limits.save_code(db, telegram_user_id, pending)
            await limits.add(db, "code_tg", telegram_user_id, now)
            await limits.add(db, "code_b24", user.bitrix_user_id, now)
        try:
            await self._bitrix.notify(user.bitrix_user_id, notification_text(code, account_label), deadline=INTERACTIVE_DEADLINE)
        except BaseException:
            async with self._storage.transaction() as db:
                current = await limits.get_code(db, telegram_user_id)
                if current is not None and current.code_hash == code_hash:  # not a newer code sent meanwhile
                    await limits.delete_code(db, telegram_user_id)
            raise
        log.info("telegram_user_id=%d: code sent to bitrix_user_id=%d", telegram_user_id, user.bitrix_user_id)
        return LinkResult(Outcome.CODE_SENT)

    async def verify(self, telegram_user_id: int, code: str) -> LinkResult:
        """Check a code and, if right, make the link, in one transaction: tries cannot race each other."""
        async with self._storage.transaction() as db:
            pending = await limits.get_code(db, telegram_user_id)
            if pending is None:
                return LinkResult(Outcome.NO_CODE)
            if self._clock.timestamp() >= pending.expires_at:
                await limits.delete_code(db, telegram_user_id)
                return LinkResult(Outcome.EXPIRED)
            if not hmac.compare_digest(pending.code_hash, self._hash(telegram_user_id, pending.bitrix_user_id, code)):
                left = await limits.spend_try(db, telegram_user_id)
                log.info("telegram_user_id=%d: wrong code, %d tries left", telegram_user_id, left)
                return LinkResult(Outcome.WRONG if left else Outcome.DEAD, tries_left=left)
            linked = await self._accounts.link_in(
                db, telegram_user_id, pending.bitrix_user_id, pending.full_name, self.defaults_for(pending.time_zone),
                refuse_taken=False,
            )
        self._accounts.wake()
        return self._linked(telegram_user_id, pending.bitrix_user_id, pending.full_name, linked)

    def _linked(self, telegram_user_id: int, bitrix_user_id: int, full_name: str, linked: Linked) -> LinkResult:
        log.info(
            "telegram_user_id=%d linked to bitrix_user_id=%d%s",
            telegram_user_id,
            bitrix_user_id,
            f" (moved from telegram_user_id={linked.moved_from})" if linked.moved_from else "",
        )
        return LinkResult(
            Outcome.LINKED, bitrix_user_id=bitrix_user_id, full_name=full_name, settings=linked.settings, moved_from=linked.moved_from
        )

    def defaults_for(self, time_zone: str) -> UserSettings:
        """Settings of a new link: the profile's zone when it is a valid IANA name, else the default."""
        tz = self._settings.default_timezone
        if time_zone and "/" in time_zone:
            try:
                zone(time_zone)
                tz = time_zone
            except ValueError:
                pass
        return replace(
            UserSettings(), timezone=tz, digest_time=self._settings.default_digest_time, digest_days=WORK_DAYS
        )


def notification_text(code: str, account_label: str) -> str:
    """The Bitrix24 notification carrying a code: who asked, and never to pass it on (en and ru)."""
    return (
        f"Telegram account {account_label} asked to link to your Bitrix24 account. "
        f"Code: {code}. It is valid for 10 minutes. Never pass it on to anyone; "
        f"if it was not you, ignore this message.\n"
        f"Telegram-аккаунт {account_label} просит привязку к вашему аккаунту Битрикс24. "
        f"Код: {code}. Он действует 10 минут. Никому его не сообщайте; если это были не вы, "
        f"просто проигнорируйте сообщение."
    )
