"""Module-level task functions used by the tests (process tasks and import paths need
functions that can be imported back by name)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import os
import threading
import time
import uuid

from pydantic import BaseModel

from taskflow import get_task_context, task_log


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Invoice(BaseModel):
    number: int
    amount: decimal.Decimal


def add(a: int, b: int) -> int:
    return a + b


def thread_name() -> str:
    return threading.current_thread().name


def process_info(value: int) -> dict[str, int]:
    task_log("in a worker process", value=value)
    context = get_task_context()
    return {"pid": os.getpid(), "value": value * 2, "attempt": context.attempt if context else -1}


def process_until_cancelled() -> str:
    context = get_task_context()
    assert context is not None
    deadline = time.monotonic() + 20
    while not context.is_cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "stopped" if context.is_cancelled() else "timed out"


def check_types(
    when: dt.datetime,
    day: dt.date,
    amount: decimal.Decimal,
    ident: uuid.UUID,
    blob: bytes,
    pair: tuple,
    members: set,
    point: Point,
    invoice: Invoice,
) -> dict[str, str]:
    observed = {
        "when": type(when).__name__,
        "tz": str(when.tzinfo),
        "day": type(day).__name__,
        "amount": type(amount).__name__,
        "ident": type(ident).__name__,
        "blob": type(blob).__name__,
        "pair": type(pair).__name__,
        "members": type(members).__name__,
        "point": type(point).__name__,
        "invoice": type(invoice).__name__,
        "invoice_amount": type(invoice.amount).__name__,
    }
    return observed


def pid_then_sleep(path: str, seconds: float) -> None:
    """Append this worker's pid to ``path``, then sleep ``seconds`` without looking at
    ``is_cancelled()``."""
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")
    time.sleep(seconds)


def crunch(n: int) -> int:
    task_log("crunching", n=n)
    return sum(range(n))


def exit_abruptly() -> None:
    os._exit(3)
