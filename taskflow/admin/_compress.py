"""Gzip for the dashboard's own responses: pages, fragments and bundled static files.

Only what the dashboard renders is compressed, so the rest of the app (its own
routes, and any streaming response such as server-sent events) is never touched. A
page is compressed once per request; a static file once per process.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

MIN_BYTES = 500  # below this, gzip's header and the CPU time cost more than they save
LEVEL = 6  # zlib's default: within a few percent of level 9 at a fraction of its time
COMPRESSIBLE_SUFFIXES = (".css", ".js", ".svg", ".txt", ".html", ".json")


def accepts_gzip(request: Request) -> bool:
    """True when the client's ``Accept-Encoding`` allows gzip (``q=0`` refuses it)."""
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def compress_response(request: Request, response: Response) -> None:
    """Gzip the body of a rendered response in place when the client accepts it and the
    body is worth compressing; say that the answer depends on ``Accept-Encoding``."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes) or len(body) < MIN_BYTES:
        return
    if "content-encoding" in response.headers:
        return
    _add_vary(response)
    if not accepts_gzip(request):
        return
    packed = gzip.compress(body, compresslevel=LEVEL, mtime=0)
    response.body = packed
    response.headers["content-length"] = str(len(packed))
    response.headers["content-encoding"] = "gzip"


class StaticGzip:
    """Gzipped copies of the bundled static files, made on first use and kept."""

    def __init__(self) -> None:
        self._packed: dict[Path, bytes] = {}

    def get(self, path: Path) -> bytes | None:
        """The gzipped content of ``path``, or None for a file not worth compressing
        (images already compressed, or too small)."""
        if path.suffix.lower() not in COMPRESSIBLE_SUFFIXES:
            return None
        packed = self._packed.get(path)
        if packed is None:
            content = path.read_bytes()
            if len(content) < MIN_BYTES:
                return None
            packed = self._packed[path] = gzip.compress(content, compresslevel=9, mtime=0)
        return packed


def _add_vary(response: Response) -> None:
    vary = response.headers.get("vary", "")
    if "accept-encoding" not in vary.lower():
        response.headers["vary"] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
