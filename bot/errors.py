"""BitrixError and its family: one class per way a Bitrix24 failure is handled."""

from __future__ import annotations

import re

__all__ = [
    "BitrixError",
    "BitrixTransientError",
    "BitrixRateLimitedError",
    "BitrixTimeBudgetError",
    "BitrixAuthError",
    "BitrixScopeError",
    "BitrixPlanError",
    "BitrixPermissionError",
    "BitrixPortalGoneError",
    "BitrixMethodError",
    "BitrixBadAnswerError",
    "error_from_envelope",
]

# Codes come from the server; anything odd is shown as a placeholder so that a
# hostile or broken answer cannot smuggle text (or a URL) into our messages.
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SAFE_METHOD = re.compile(r"^[A-Za-z0-9_.]{1,100}$")


def _safe(value: str | None, pattern: re.Pattern[str]) -> str | None:
    """Return value when it matches pattern, else a placeholder (None stays None)."""
    if value is None:
        return None
    return value if pattern.match(value) else "<unprintable>"


class BitrixError(Exception):
    """A Bitrix24 call failed; subclasses say how the failure is handled."""

    permanent: bool = False
    kind: str = "error"

    def __init__(
        self,
        code: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
        method: str | None = None,
    ) -> None:
        self.code: str = _safe(str(code), _SAFE_CODE) or ""
        self.http_status: int | None = http_status
        self.retry_after: float | None = retry_after
        self.method: str | None = _safe(method, _SAFE_METHOD)
        super().__init__(self._message())

    def _message(self) -> str:
        """Build the message from code, method, status and retry_after only (never a URL)."""
        parts = [f"Bitrix24 {self.kind} error {self.code}"]
        if self.method:
            parts.append(f"in {self.method}")
        if self.http_status is not None:
            parts.append(f"(HTTP {self.http_status})")
        if self.retry_after is not None:
            parts.append(f"retry after {self.retry_after:.0f} s")
        return " ".join(parts)

    def __str__(self) -> str:
        return self._message()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, http_status={self.http_status!r}, "
            f"retry_after={self.retry_after!r}, method={self.method!r})"
        )

    def text(self, lang: str) -> str:
        """A plain one-line explanation for a user or admin in "en" or "ru"."""
        idx = 1 if lang == "ru" else 0
        specific = _CODE_TEXTS.get(self.code.lower())
        if specific is not None:
            return specific[idx]
        return _KIND_TEXTS[self.kind][idx]


class BitrixTransientError(BitrixError):
    """Bitrix24 unreachable, a 5xx or a timeout: retry later."""

    permanent = False
    kind = "transient"


class BitrixRateLimitedError(BitrixError):
    """QUERY_LIMIT_EXCEEDED: the request-rate bucket is full; slow down."""

    permanent = False
    kind = "rate_limited"


class BitrixTimeBudgetError(BitrixError):
    """OPERATION_TIME_LIMIT: this method's execution-time budget is used up until retry_after."""

    permanent = False
    kind = "time_budget"


class BitrixAuthError(BitrixError):
    """The webhook code was rejected, revoked or expired."""

    permanent = True
    kind = "auth"


class BitrixScopeError(BitrixError):
    """The webhook lacks a scope the method needs."""

    permanent = True
    kind = "scope"


class BitrixPlanError(BitrixError):
    """REST is not available to this portal (plan, subscription or a block by Bitrix24)."""

    permanent = True
    kind = "plan"


class BitrixPermissionError(BitrixError):
    """The webhook's user or the way the webhook is called is not allowed."""

    permanent = True
    kind = "permission"


class BitrixPortalGoneError(BitrixError):
    """The portal was deleted or its public part is closed."""

    permanent = True
    kind = "portal_gone"


class BitrixMethodError(BitrixError):
    """The method refused these parameters (all numeric codes such as "0")."""

    permanent = True
    kind = "method"


class BitrixBadAnswerError(BitrixError):
    """The answer was not a Bitrix24 envelope (HTML, empty, redirect, wrong shape)."""

    permanent = False
    kind = "bad_answer"


# Every code of system-errors.md / system-errors.ru.md plus the extra codes we know of,
# lower-cased (codes are compared case-insensitively, facts section 1).
_CODE_CLASSES: dict[str, type[BitrixError]] = {
    # System errors, both tables.
    "internal_server_error": BitrixTransientError,
    "error_unexpected_answer": BitrixTransientError,
    "query_limit_exceeded": BitrixRateLimitedError,
    "operation_time_limit": BitrixTimeBudgetError,
    "error_batch_method_not_allowed": BitrixMethodError,
    "error_batch_length_exceeded": BitrixMethodError,
    "no_auth_found": BitrixAuthError,
    # "Https required": the webhook URL itself is wrong for this portal. It is not the
    # call's parameters (method error would blame our code and be logged per command);
    # like INVALID_CREDENTIALS it fails every call until the admin fixes the webhook
    # setting, so it is a permanent permission error that is told to admins.
    "invalid_request": BitrixPermissionError,
    # A manual block by Bitrix24 support: REST is switched off for the whole portal
    # until support lifts it. That is handled exactly like ACCESS_DENIED (stop, tell
    # admins once, never hammer), and it is not a rate limit we can wait out, so it is
    # a plan-class error with its own message.
    "overload_limit": BitrixPlanError,
    "access_denied": BitrixPlanError,
    "invalid_credentials": BitrixPermissionError,
    "error_manifest_is_not_available": BitrixMethodError,
    "insufficient_scope": BitrixScopeError,
    "expired_token": BitrixAuthError,
    "user_access_error": BitrixPermissionError,
    "portal_deleted": BitrixPortalGoneError,
    # Other codes from the rest module and the SDKs (facts section 7).
    "error_method_not_found": BitrixMethodError,
    "wrong_auth_type": BitrixMethodError,
    "method_confirm_waiting": BitrixPermissionError,
    "method_confirm_denied": BitrixPermissionError,
    "authorization_error": BitrixAuthError,
    "invalid_token": BitrixAuthError,
    "payment_required": BitrixPlanError,
    "application_not_found": BitrixAuthError,
    "error_oauth": BitrixAuthError,
    "invalid_arg_value": BitrixMethodError,
    "allowed_only_intranet_user": BitrixPermissionError,
    # im.notify.system.add (facts section 5).
    "user_id_empty": BitrixMethodError,
    "message_empty": BitrixMethodError,
    "attach_oversize": BitrixMethodError,
    "attach_error": BitrixMethodError,
}

_KIND_TEXTS: dict[str, tuple[str, str]] = {
    "error": ("Bitrix24 returned an error.", "Битрикс24 вернул ошибку."),
    "transient": (
        "Bitrix24 is not answering right now; the bot will try again.",
        "Битрикс24 сейчас не отвечает; бот попробует ещё раз.",
    ),
    "rate_limited": (
        "Bitrix24 is limiting the request rate; the bot will slow down and try again.",
        "Битрикс24 ограничивает частоту запросов; бот замедлится и попробует ещё раз.",
    ),
    "time_budget": (
        "Bitrix24 has paused this method for this webhook until its time budget resets.",
        "Битрикс24 приостановил этот метод для вебхука до сброса лимита времени выполнения.",
    ),
    "auth": (
        "Bitrix24 rejected the webhook: it was deleted, changed or has expired.",
        "Битрикс24 отклонил вебхук: он удалён, изменён или истёк.",
    ),
    "scope": (
        "The Bitrix24 webhook lacks a permission (scope) this needs; add task, user and im.",
        "У вебхука Битрикс24 не хватает прав (scope); добавьте task, user и im.",
    ),
    "plan": (
        "The REST API is not available on this Bitrix24 portal's plan.",
        "REST API недоступен на тарифе этого портала Битрикс24.",
    ),
    "permission": (
        "The Bitrix24 webhook's user is not allowed to do this.",
        "Пользователю вебхука Битрикс24 это не разрешено.",
    ),
    "portal_gone": (
        "The Bitrix24 portal was deleted or is closed.",
        "Портал Битрикс24 удалён или закрыт.",
    ),
    "method": (
        "Bitrix24 refused the request.",
        "Битрикс24 отклонил запрос.",
    ),
    "bad_answer": (
        "Bitrix24 sent an answer the bot cannot read (the portal may be blocked or misconfigured).",
        "Битрикс24 прислал ответ, который бот не может прочитать (портал заблокирован или настроен неверно).",
    ),
}

# Messages for codes whose cause is more precise than their class's text.
_CODE_TEXTS: dict[str, tuple[str, str]] = {
    "internal_server_error": (
        "Bitrix24 had an internal error; the bot will try again.",
        "В Битрикс24 произошла внутренняя ошибка; бот попробует ещё раз.",
    ),
    "error_unexpected_answer": (
        "Bitrix24 returned an unexpected response; the bot will try again.",
        "Битрикс24 вернул неожиданный ответ; бот попробует ещё раз.",
    ),
    "error_batch_method_not_allowed": (
        "Bitrix24 does not allow this method inside a batch request.",
        "Битрикс24 не разрешает этот метод в пакетном запросе (batch).",
    ),
    "error_batch_length_exceeded": (
        "The batch request to Bitrix24 had more than 50 commands.",
        "В пакетном запросе к Битрикс24 больше 50 команд.",
    ),
    "no_auth_found": (
        "Bitrix24 does not recognise the webhook code: the webhook was deleted or changed.",
        "Битрикс24 не узнаёт код вебхука: вебхук удалён или изменён.",
    ),
    "expired_token": (
        "The Bitrix24 access token or webhook has expired.",
        "Срок действия токена или вебхука Битрикс24 истёк.",
    ),
    "invalid_request": (
        "Bitrix24 requires HTTPS: the webhook address must start with https://.",
        "Битрикс24 требует HTTPS: адрес вебхука должен начинаться с https://.",
    ),
    "overload_limit": (
        "Bitrix24 support has blocked the REST API of this portal for overload; contact Bitrix24 support.",
        "Техподдержка Битрикс24 заблокировала REST API портала из-за перегрузки; обратитесь в поддержку Битрикс24.",
    ),
    "access_denied": (
        "The REST API is available only on commercial Bitrix24 plans.",
        "REST API доступен только на коммерческих тарифах Битрикс24.",
    ),
    "payment_required": (
        "The Bitrix24 plan or subscription needed for the REST API is not paid.",
        "Тариф или подписка Битрикс24, нужные для REST API, не оплачены.",
    ),
    "invalid_credentials": (
        "The user who owns the Bitrix24 webhook lacks the necessary permissions.",
        "У владельца вебхука Битрикс24 не хватает прав.",
    ),
    "user_access_error": (
        "The Bitrix24 administrator restricted this application to other users.",
        "Администратор Битрикс24 открыл это приложение только другим пользователям.",
    ),
    "error_manifest_is_not_available": (
        "The Bitrix24 manifest is not available.",
        "Манифест Битрикс24 недоступен.",
    ),
    "portal_deleted": (
        "The Bitrix24 portal was deleted or its public part is closed.",
        "Портал Битрикс24 удалён или его публичная часть закрыта.",
    ),
    "error_method_not_found": (
        "Bitrix24 does not know this method (an old portal version or a missing module).",
        "Битрикс24 не знает этот метод (старая версия портала или нет модуля).",
    ),
    "method_confirm_waiting": (
        "A Bitrix24 administrator has not yet confirmed access to this method.",
        "Администратор Битрикс24 ещё не подтвердил доступ к этому методу.",
    ),
    "method_confirm_denied": (
        "A Bitrix24 administrator denied access to this method.",
        "Администратор Битрикс24 запретил доступ к этому методу.",
    ),
    "authorization_error": (
        "Bitrix24 could not authorize the webhook's user (the user may be deactivated).",
        "Битрикс24 не смог авторизовать пользователя вебхука (возможно, он уволен).",
    ),
    "user_id_empty": (
        "The Bitrix24 notification has no recipient.",
        "У уведомления Битрикс24 не указан получатель.",
    ),
    "message_empty": (
        "The Bitrix24 notification text is empty.",
        "Текст уведомления Битрикс24 пуст.",
    ),
}


def error_from_envelope(
    code: object, description: object, http_status: int | None, method: str | None
) -> BitrixError:
    """Map a Bitrix24 error code (any case) to its typed error; the description is never kept."""
    del description  # may echo request data; messages are built from code + method + status
    text = "" if code is None else str(code).strip()
    cls = _CODE_CLASSES.get(text.lower())
    if cls is None:
        if text.isdigit():
            # Engine controllers answer with the numeric code as a string, usually "0".
            cls = BitrixMethodError
        elif http_status is not None and http_status >= 500:
            cls = BitrixTransientError
        else:
            cls = BitrixMethodError
    return cls(text, http_status=http_status, method=method)


def known_codes() -> dict[str, type[BitrixError]]:
    """Every explicitly mapped code (lower case) and its class, for tests and docs."""
    return dict(_CODE_CLASSES)
