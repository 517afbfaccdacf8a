"""Storage over one aiosqlite connection: the only place with SQL (SPEC section 9).

`core` owns the connection and the serialised transactions; one module per area holds that
area's SQL as functions of a connection, with no business rules: the modules that decide
(account, linking, coordinator, delivery) compose them in one transaction per decision.
"""

from bot.storage.audience import Audience
from bot.storage.core import DatabaseTooNew, Db, Storage, StorageError, migrations
from bot.storage.links import Link
from bot.storage.outbox import OutboxRow, OutgoingMessage
from bot.storage.users import User

__all__ = [
    "Audience",
    "DatabaseTooNew",
    "Db",
    "Link",
    "OutboxRow",
    "OutgoingMessage",
    "Storage",
    "StorageError",
    "User",
    "migrations",
]
