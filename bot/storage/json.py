"""Compact JSON for values stored in TEXT columns."""

from __future__ import annotations

import json
from typing import Any


def to_json(value: Any) -> str:
    """Compact, key-sorted JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
