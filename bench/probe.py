"""A control for timing figures: how late a trivial process wakes up at each whole
second on this machine right now (``python -m bench.probe SECONDS``).

It runs beside the schedule-lateness server; when the machine is busy with other work,
this process is late too, which separates machine noise from the scheduler's own delay.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time

from bench.stats import distribution


async def measure(seconds: float) -> list[float]:
    """Sleep until each whole second for ``seconds``; lateness of each wake-up in ms."""
    late: list[float] = []
    end = time.time() + seconds
    while time.time() < end:
        target = math.floor(time.time()) + 1
        await asyncio.sleep(max(target - time.time(), 0))
        late.append((time.time() - target) * 1000)
    return late


def main(argv: list[str]) -> int:
    """Print the lateness distribution as JSON."""
    print(json.dumps(distribution(asyncio.run(measure(float(argv[0]))))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
