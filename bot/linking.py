"""Verified linking of a Telegram account to a Bitrix24 user (SPEC section 4)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, replace
from enum import Enum

from bot.bitrix import BitrixClient, BitrixUser
from bot.config import Settings
from bot.model import UserSettings, WORK_DAYS, zone
from bot.parsing import LinkTarget
from bot.storage import Storage

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
    settings: UserSettings | None = None
    moved_from: int | None = None
    tries_left: int = 0


class Linker:
    """Resolves, sends and checks codes, and writes the link; all limits live here."""

    def __init__(self, settings: Settings, storage: Storage, bitrix: BitrixClient, clock) -> None:
        self._settings = settings
        self._storage = storage
        self._bitrix = bitrix
        self._clock = clock
        self._key = hashlib.sha256(b"link-code:" + settings.telegram_bot_token.encode()).digest()

    def _hash(self, telegram_user_id: int, bitrix_user_id: int, code: str) -> str:
        message = f"{telegram_user_id}:{bitrix_user_id}:{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def _resolve(self, target: LinkTarget) -> BitrixUser | None:
        if target.kind == "id":
            user = await self._bitrix.user_by_id(int(target.value))
            return user if user and user.bitrix_user_id == int(target.value) and user.active else None
        return await self._bitrix.user_by_email(str(target.value))

    async def request(self, telegram_user_id: int, account_label: str, target: LinkTarget) -> LinkResult:
        """Look up the Bitrix24 user; send a code (or link at once with LINK_VERIFICATION=none)."""
        now = self._clock.timestamp()
        if await self._storage.count_events("lookup", telegram_user_id, now - HOUR) >= LOOKUPS_PER_HOUR:
            return LinkResult(Outcome.TOO_MANY_LOOKUPS)
        await self._storage.add_event("lookup", telegram_user_id, now, expire_before=now - 2 * HOUR)
        user = await self._resolve(target)
        if user is None:
            log.info("telegram_user_id=%d: /link found no active user", telegram_user_id)
            return LinkResult(Outcome.NOT_FOUND)
        holder = await self._storage.telegram_user_of(user.bitrix_user_id)
        if holder == telegram_user_id:
            return LinkResult(Outcome.ALREADY_YOURS, user=user)
        if self._settings.link_verification == "none":
            if holder is not None:
                return LinkResult(Outcome.TAKEN)
            return await self._link(telegram_user_id, user)
        if (
            await self._storage.count_events("code_tg", telegram_user_id, now - HOUR) >= CODES_PER_HOUR
            or await self._storage.count_events("code_b24", user.bitrix_user_id, now - HOUR) >= CODES_PER_HOUR
        ):
            return LinkResult(Outcome.TOO_MANY_CODES)
        code = f"{secrets.randbelow(1_000_000):06d}"
        await self._storage.save_link_code(
            telegram_user_id,
            user.bitrix_user_id,
            self._hash(telegram_user_id, user.bitrix_user_id, code),
            now + CODE_TTL_SECONDS,
            CODE_TRIES,
            now,
        )
        try:
            await self._bitrix.notify(user.bitrix_user_id, notification_text(code, account_label))
        except BaseException:
            await self._storage.delete_link_code(telegram_user_id)
            raise
        log.info("telegram_user_id=%d: code sent to bitrix_user_id=%d", telegram_user_id, user.bitrix_user_id)
        return LinkResult(Outcome.CODE_SENT)

    async def verify(self, telegram_user_id: int, code: str) -> LinkResult:
        """Check a code; the right one links (moving the link from any other Telegram account)."""
        pending = await self._storage.get_link_code(telegram_user_id)
        if pending is None:
            return LinkResult(Outcome.NO_CODE)
        bitrix_user_id, code_hash, expires_at, _ = pending
        if self._clock.timestamp() >= expires_at:
            await self._storage.delete_link_code(telegram_user_id)
            return LinkResult(Outcome.EXPIRED)
        if not hmac.compare_digest(code_hash, self._hash(telegram_user_id, bitrix_user_id, code)):
            left = await self._storage.spend_code_try(telegram_user_id)
            log.info("telegram_user_id=%d: wrong code, %d tries left", telegram_user_id, left)
            return LinkResult(Outcome.WRONG if left else Outcome.DEAD, tries_left=left)
        user = await self._bitrix.user_by_id(bitrix_user_id)
        if user is None or not user.active:
            await self._storage.delete_link_code(telegram_user_id)
            return LinkResult(Outcome.NOT_FOUND)
        return await self._link(telegram_user_id, user)

    async def _link(self, telegram_user_id: int, user: BitrixUser) -> LinkResult:
        defaults = self.defaults_for(user)
        moved_from = await self._storage.link(
            telegram_user_id, user.bitrix_user_id, user.full_name, defaults, self._clock.timestamp()
        )
        settings = await self._storage.get_settings(telegram_user_id)
        log.info(
            "telegram_user_id=%d linked to bitrix_user_id=%d%s",
            telegram_user_id,
            user.bitrix_user_id,
            f" (moved from telegram_user_id={moved_from})" if moved_from else "",
        )
        return LinkResult(Outcome.LINKED, user=user, settings=settings, moved_from=moved_from)

    def defaults_for(self, user: BitrixUser) -> UserSettings:
        """Settings of a new link: the profile's zone when it is a valid IANA name, else the default."""
        tz = self._settings.default_timezone
        if user.time_zone and "/" in user.time_zone:
            try:
                zone(user.time_zone)
                tz = user.time_zone
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
