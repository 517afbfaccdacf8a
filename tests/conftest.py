"""Shared fixtures: no network but loopback, real SQLite files, the fakes."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("PTB_TIMEDELTA", "1")

# clock, fake and http for the Bitrix24 client tests (a module may override one, as the deadline tests do).
pytest_plugins = ("tests.bitrix_clock",)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check(address: object) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            if host == "localhost":
                return
        pytest.fail(f"network access outside the fakes: {host!r}")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection to a host that is not a loopback fake."""

    def connect(self: socket.socket, address: object) -> None:
        _check(address)
        return _real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        _check(address)
        return _real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)

    def no_dns(host: object, *args: object, **kwargs: object) -> object:
        if host not in ("127.0.0.1", "localhost", "::1", None):
            pytest.fail(f"DNS lookup outside the fakes: {host!r}")
        return _real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)


_real_getaddrinfo = socket.getaddrinfo
