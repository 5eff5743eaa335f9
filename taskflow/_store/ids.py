"""Task ids: how new ones look and the shapes a given one may be stored in.

New task ids are canonical UUID strings (``str(uuid.uuid4())``: 36 characters, lower
case, with dashes), the shape fastapi-taskflow hands out, so ids its users stored keep
working. Rows written by earlier taskflow releases hold 32-hex-digit ids (``uuid4().hex``).
A caller may give either shape, in any case, for a task stored in either shape:
:func:`task_id_forms` lists the (at most two) stored ids to look up.
"""

from __future__ import annotations

import re
import uuid

# One UUID: 32 hex digits, or 36 characters with dashes after digits 8, 12, 16 and 20.
_HEX_ID = re.compile(r"[0-9a-fA-F]{32}")
_DASHED_ID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# Where the dashes go in a canonical UUID string, counted in hex digits.
_DASH_AFTER = (8, 12, 16, 20)


def new_task_id() -> str:
    """A fresh random task id: a canonical UUID string (36 characters)."""
    return str(uuid.uuid4())


def new_hex_id() -> str:
    """A fresh random internal id (32 hex digits), for instances and schedules."""
    return uuid.uuid4().hex


def task_id_forms(task_id: str) -> tuple[str, ...]:
    """The stored ids ``task_id`` may stand for, to look up with ``id IN (...)``.

    An id shaped like a UUID (32 hex digits or the dashed 36-character form, any case)
    gives its canonical dashed form and its 32-hex form, both lower case; anything else
    is returned unchanged (it matches nothing unless stored exactly so).

    Args:
        task_id: an id as a caller gave it.
    """
    if _HEX_ID.fullmatch(task_id) or _DASHED_ID.fullmatch(task_id):
        hex_digits = task_id.replace("-", "").lower()
        return dashed(hex_digits), hex_digits
    return (task_id,)


def dashed(hex_digits: str) -> str:
    """Hex digits with a dash where the canonical UUID form has one.

    A prefix of an id (fewer than 32 digits) gives the prefix of its dashed form, with
    no trailing dash: ``dashed("0123456789ab")`` is ``"01234567-89ab"``.
    """
    parts = []
    start = 0
    for end in (*_DASH_AFTER, 32):
        if start >= len(hex_digits):
            break
        parts.append(hex_digits[start:end])
        start = end
    return "-".join(parts)


def hex_prefix(text: str) -> str | None:
    """The hex digits of ``text`` when it is the start of an id in either shape, else None.

    ``"0123abcd"``, ``"0123abcd-45"`` and a whole id (either shape) qualify; dashes
    must sit where the canonical form has them. Case is not changed.
    """
    digits = text.replace("-", "")
    if not 0 < len(digits) <= 32 or not _HEX_ID.fullmatch(digits.ljust(32, "0")):
        return None
    if text.rstrip("-") not in (digits, dashed(digits)):
        return None
    return digits
