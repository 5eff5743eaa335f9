"""Size limits that keep one task from bloating the database."""

from __future__ import annotations

from dataclasses import dataclass

from taskflow.errors import ConfigurationError, TaskArgumentError


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-task limits: stored arguments/result size, log message length, log lines."""

    payload_bytes: int = 1_048_576
    log_message_chars: int = 8_192
    log_lines: int = 10_000

    def __post_init__(self) -> None:
        for name in ("payload_bytes", "log_message_chars", "log_lines"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} limit must be >= 1, got {getattr(self, name)}")

    def check_payload(self, text: str, *, what: str) -> str:
        """``text`` if it fits, else :class:`TaskArgumentError` saying how large it is."""
        size = len(text.encode())
        if size > self.payload_bytes:
            raise TaskArgumentError(
                f"{what} take {size} bytes stored, over the limit of {self.payload_bytes} "
                "(max_payload_bytes); store large data elsewhere and pass a reference"
            )
        return text

    def truncate_log(self, message: str) -> str:
        """``message`` cut to the limit, with a marker saying how much was cut."""
        if len(message) <= self.log_message_chars:
            return message
        cut = len(message) - self.log_message_chars
        return f"{message[: self.log_message_chars]}… [truncated {cut} characters]"
