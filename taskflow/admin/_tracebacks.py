"""Errors read top down: the exception first, the app's frames before taskflow's.

A stored traceback starts with taskflow's own frames (the runner and the executors)
before the frames of the task's function. :func:`fold_traceback` splits it into parts
so that the task page folds runs of taskflow's frames behind a toggle, and names the
app's last frame (where the exception was raised). :func:`error_head` splits an error
line into the exception class and its message for the top of the page.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

# The taskflow package these modules belong to.
OWN_PACKAGE = Path(__file__).resolve().parent.parent
_FRAME = re.compile(
    r'^(?P<prefix>[ |]*)File "(?P<file>[^"]*)", line (?P<line>\d+)(?:, in (?P<func>.*))?$'
)
_CLASS_NAME = re.compile(r"^[A-Za-z_][\w.]*$")
MAX_HEAD = 500  # characters of the error shown at the top of the page


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a traceback: where it is and whether it is taskflow's own."""

    file: str
    line: int
    function: str
    own: bool

    @property
    def place(self) -> str:
        """``"app/jobs.py:35"``: the file's last two path parts and the line."""
        parts = self.file.replace("\\", "/").split("/")
        return f"{'/'.join(parts[-2:])}:{self.line}"


@dataclass(frozen=True, slots=True)
class TracebackPart:
    """A stretch of a traceback's text; ``own_frames`` > 0 marks a run of that many of
    taskflow's frames (folded by default)."""

    text: str
    own_frames: int = 0


@dataclass(slots=True)
class TracebackView:
    """A traceback as parts, with the count of taskflow's frames and the app's last
    frame (None when every frame is taskflow's or there are none)."""

    parts: list[TracebackPart] = field(default_factory=list)
    own_frames: int = 0
    origin: Frame | None = None


@dataclass(frozen=True, slots=True)
class ErrorHead:
    """The exception class (empty when the error names none) and the first line of
    its message."""

    error_class: str
    message: str


def fold_traceback(text: str | None) -> TracebackView:
    """``text`` split into parts, with taskflow's frames in parts of their own."""
    view = TracebackView()
    lines = (text or "").splitlines(keepends=True)
    plain: list[str] = []
    own: list[str] = []
    own_count = 0

    def flush_plain() -> None:
        if plain:
            view.parts.append(TracebackPart("".join(plain)))
            plain.clear()

    def flush_own() -> None:
        nonlocal own_count
        if own:
            view.parts.append(TracebackPart("".join(own), own_frames=own_count))
            own.clear()
            own_count = 0

    index = 0
    while index < len(lines):
        match = _FRAME.match(lines[index].rstrip("\r\n"))
        if match is None:
            flush_own()
            plain.append(lines[index])
            index += 1
            continue
        end = _frame_end(lines, index, match["prefix"])
        frame = Frame(
            file=match["file"],
            line=int(match["line"]),
            function=(match["func"] or "").strip(),
            own=is_own_file(match["file"]),
        )
        if frame.own:
            flush_plain()
            own.extend(lines[index:end])
            own_count += 1
            view.own_frames += 1
        else:
            flush_own()
            plain.extend(lines[index:end])
            view.origin = frame
        index = end
    flush_own()
    flush_plain()
    return view


def _frame_end(lines: list[str], start: int, prefix: str) -> int:
    """The index after a frame's lines: its ``File`` line, then the lines indented
    further under the same prefix (the source line and its ``^^^`` markers)."""
    end = start + 1
    while end < len(lines) and lines[end].startswith(prefix + " "):
        if _FRAME.match(lines[end].rstrip("\r\n")):
            break
        end += 1
    return end


@functools.lru_cache(maxsize=1024)
def is_own_file(path: str) -> bool:
    """True when ``path`` is a module of taskflow (of this version, wherever it was
    installed on the machine that wrote the traceback)."""
    normal = path.replace("\\", "/")
    marker = normal.rfind("/taskflow/")
    if marker < 0:
        return False
    inside = normal[marker + len("/taskflow/") :]
    return bool(inside) and ".." not in inside.split("/") and (OWN_PACKAGE / inside).is_file()


def error_head(error: str | None) -> ErrorHead:
    """The class and the first message line of an error such as ``"KeyError: 'id'"``."""
    lines = (error or "").strip().splitlines()
    first = lines[0].strip() if lines else ""
    name, separator, message = first.partition(": ")
    if separator and _CLASS_NAME.match(name):
        return ErrorHead(name, message[:MAX_HEAD])
    if _CLASS_NAME.match(first) and first[:1].isupper():
        return ErrorHead(first, "")
    return ErrorHead("", first[:MAX_HEAD])
