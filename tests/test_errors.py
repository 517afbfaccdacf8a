"""Tests for bot.errors: every Bitrix24 error code maps to exactly one typed error."""

from __future__ import annotations

import pytest

from bot.errors import (
    BitrixAuthError,
    BitrixBadAnswerError,
    BitrixError,
    BitrixMethodError,
    BitrixPermissionError,
    BitrixPlanError,
    BitrixPortalGoneError,
    BitrixRateLimitedError,
    BitrixScopeError,
    BitrixTimeBudgetError,
    BitrixTransientError,
    error_from_envelope,
    known_codes,
)

WEBHOOK_CODE = "fakewebhookcode0123456789"

# (code as the docs spell it, usual HTTP status, expected class)
SYSTEM_ERRORS_EN = [
    ("INTERNAL_SERVER_ERROR", 500, BitrixTransientError),
    ("ERROR_UNEXPECTED_ANSWER", 500, BitrixTransientError),
    ("QUERY_LIMIT_EXCEEDED", 503, BitrixRateLimitedError),
    ("ERROR_BATCH_METHOD_NOT_ALLOWED", 405, BitrixMethodError),
    ("ERROR_BATCH_LENGTH_EXCEEDED", 400, BitrixMethodError),
    ("NO_AUTH_FOUND", 401, BitrixAuthError),
    ("INVALID_REQUEST", 400, BitrixPermissionError),
    ("OVERLOAD_LIMIT", 503, BitrixPlanError),
    ("ACCESS_DENIED", 403, BitrixPlanError),
    ("INVALID_CREDENTIALS", 403, BitrixPermissionError),
    ("ERROR_MANIFEST_IS_NOT_AVAILABLE", 404, BitrixMethodError),
    ("insufficient_scope", 403, BitrixScopeError),
    ("expired_token", 401, BitrixAuthError),
    ("user_access_error", 403, BitrixPermissionError),
    ("PORTAL_DELETED", 500, BitrixPortalGoneError),
]
# The RU table has every EN row plus OPERATION_TIME_LIMIT.
SYSTEM_ERRORS_RU = SYSTEM_ERRORS_EN + [("OPERATION_TIME_LIMIT", 429, BitrixTimeBudgetError)]
EXTRA_CODES = [
    ("ERROR_METHOD_NOT_FOUND", 404, BitrixMethodError),
    ("WRONG_AUTH_TYPE", 403, BitrixMethodError),
    ("METHOD_CONFIRM_WAITING", 401, BitrixPermissionError),
    ("METHOD_CONFIRM_DENIED", 403, BitrixPermissionError),
    ("authorization_error", 401, BitrixAuthError),
    ("invalid_token", 401, BitrixAuthError),
    ("PAYMENT_REQUIRED", 402, BitrixPlanError),
    ("USER_ID_EMPTY", 400, BitrixMethodError),
    ("MESSAGE_EMPTY", 400, BitrixMethodError),
    ("ATTACH_OVERSIZE", 400, BitrixMethodError),
    ("ATTACH_ERROR", 400, BitrixMethodError),
    ("APPLICATION_NOT_FOUND", 401, BitrixAuthError),
    ("ERROR_OAUTH", 401, BitrixAuthError),
    ("INVALID_ARG_VALUE", 400, BitrixMethodError),
    ("ALLOWED_ONLY_INTRANET_USER", 403, BitrixPermissionError),
    ("0", 400, BitrixMethodError),
    ("0", 500, BitrixMethodError),
    ("100", 400, BitrixMethodError),
    ("42", 200, BitrixMethodError),
]
ALL_CODES = SYSTEM_ERRORS_RU + EXTRA_CODES

EXPECTED_KINDS = {
    BitrixTransientError: ("transient", False),
    BitrixRateLimitedError: ("rate_limited", False),
    BitrixTimeBudgetError: ("time_budget", False),
    BitrixAuthError: ("auth", True),
    BitrixScopeError: ("scope", True),
    BitrixPlanError: ("plan", True),
    BitrixPermissionError: ("permission", True),
    BitrixPortalGoneError: ("portal_gone", True),
    BitrixMethodError: ("method", True),
    BitrixBadAnswerError: ("bad_answer", False),
}


def _case_variants(code: str) -> list[str]:
    return sorted({code, code.lower(), code.upper(), code.swapcase(), code.title()})


@pytest.mark.parametrize(("code", "status", "cls"), SYSTEM_ERRORS_EN, ids=lambda v: str(v))
def test_every_code_of_the_english_system_error_table_maps_to_its_class(code, status, cls):
    err = error_from_envelope(code, "whatever", status, "tasks.task.counters.get")
    assert type(err) is cls


@pytest.mark.parametrize(("code", "status", "cls"), SYSTEM_ERRORS_RU, ids=lambda v: str(v))
def test_every_code_of_the_russian_system_error_table_maps_to_its_class(code, status, cls):
    err = error_from_envelope(code, "Метод заблокирован", status, "batch")
    assert type(err) is cls


@pytest.mark.parametrize(("code", "status", "cls"), EXTRA_CODES, ids=lambda v: str(v))
def test_extra_method_and_sdk_codes_map_to_their_class(code, status, cls):
    assert type(error_from_envelope(code, "", status, "im.notify.system.add")) is cls


@pytest.mark.parametrize(("code", "status", "cls"), ALL_CODES, ids=lambda v: str(v))
def test_codes_are_compared_case_insensitively(code, status, cls):
    for variant in _case_variants(code):
        assert type(error_from_envelope(variant, None, status, None)) is cls


@pytest.mark.parametrize(("code", "status", "cls"), ALL_CODES, ids=lambda v: str(v))
def test_the_class_does_not_depend_on_the_http_status_for_known_codes(code, status, cls):
    for other in (200, 400, 403, 500, 503, None):
        if code.isdigit() or cls is not BitrixTransientError:
            assert type(error_from_envelope(code, "", other, "x")) is cls


def test_the_mapping_table_holds_every_documented_code():
    documented = {code.lower() for code, _, _ in SYSTEM_ERRORS_RU + EXTRA_CODES if not code.isdigit()}
    assert documented <= set(known_codes())


def test_an_unknown_code_on_a_5xx_is_transient():
    err = error_from_envelope("SOMETHING_NEW", "boom", 502, "profile")
    assert type(err) is BitrixTransientError
    assert err.http_status == 502


@pytest.mark.parametrize("status", [200, 400, 404, 409, None])
def test_an_unknown_code_below_500_is_a_method_error(status):
    assert type(error_from_envelope("SOMETHING_NEW", "", status, "profile")) is BitrixMethodError


@pytest.mark.parametrize(("cls", "expected"), list(EXPECTED_KINDS.items()), ids=lambda v: str(v))
def test_each_class_has_its_stable_kind_and_permanence(cls, expected):
    kind, permanent = expected
    err = cls("X", http_status=500, method="profile")
    assert isinstance(err, BitrixError)
    assert (err.kind, err.permanent) == (kind, permanent)


def test_the_error_keeps_code_status_method_and_retry_after():
    err = BitrixTimeBudgetError("OPERATION_TIME_LIMIT", http_status=429, retry_after=120.0, method="tasks.task.counters.get")
    assert (err.code, err.http_status, err.retry_after, err.method) == (
        "OPERATION_TIME_LIMIT",
        429,
        120.0,
        "tasks.task.counters.get",
    )
    assert "OPERATION_TIME_LIMIT" in str(err)
    assert "tasks.task.counters.get" in str(err)
    assert "429" in str(err)


@pytest.mark.parametrize(("code", "status", "cls"), ALL_CODES, ids=lambda v: str(v))
@pytest.mark.parametrize("lang", ["en", "ru"])
def test_every_code_has_a_plain_one_line_text_in_english_and_russian(code, status, cls, lang):
    text = error_from_envelope(code, "", status, "profile").text(lang)
    assert text and "\n" not in text
    assert text.endswith(".")
    has_cyrillic = any("а" <= ch.lower() <= "я" for ch in text)
    assert has_cyrillic is (lang == "ru")


@pytest.mark.parametrize("cls", list(EXPECTED_KINDS), ids=lambda c: c.__name__)
@pytest.mark.parametrize("lang", ["en", "ru"])
def test_every_class_has_a_fallback_text_for_an_unknown_code(cls, lang):
    text = cls("SOMETHING_NEW").text(lang)
    assert text and "\n" not in text


@pytest.mark.parametrize(("code", "status", "cls"), ALL_CODES, ids=lambda v: str(v))
def test_no_message_or_repr_contains_the_webhook_code_even_when_the_description_does(code, status, cls):
    description = f"Wrong data for https://corp.bitrix24.com/rest/1/{WEBHOOK_CODE}/profile.json"
    err = error_from_envelope(code, description, status, "profile")
    for rendered in (str(err), repr(err), err.text("en"), err.text("ru"), *map(str, err.args)):
        assert WEBHOOK_CODE not in rendered
        assert "/rest/" not in rendered


def test_a_code_that_is_not_a_plain_token_is_not_echoed():
    err = error_from_envelope(f"https://x/rest/1/{WEBHOOK_CODE}/", "", 400, "profile")
    assert WEBHOOK_CODE not in str(err)
    assert WEBHOOK_CODE not in repr(err)
    assert type(err) is BitrixMethodError
