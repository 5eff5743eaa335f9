"""Reading the dashboard's HTML forms without an extra dependency.

The dashboard's forms are all ``application/x-www-form-urlencoded`` (no uploads), which
the standard library parses; Starlette's own form parser would need python-multipart.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import HTTPException, Request

MAX_FORM_BYTES = 1024 * 1024
URLENCODED = "application/x-www-form-urlencoded"


class FormValues:
    """The fields of a submitted form."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = self._fields.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name`` (checkboxes)."""
        return list(self._fields.get(name, []))

    def __contains__(self, name: object) -> bool:
        return name in self._fields


async def read_form(request: Request) -> FormValues:
    """The form of a request (empty for other content types).

    Raises:
        HTTPException: 413 for a form over 1 MiB.
    """
    cached = getattr(request.state, "taskflow_form", None)
    if isinstance(cached, FormValues):
        return cached
    values = FormValues({})
    if request.headers.get("content-type", "").split(";")[0].strip() == URLENCODED:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, detail="form too large")
        values = FormValues(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.taskflow_form = values
    return values
