"""Counts, durations and concurrency of each scenario, per mode.

``full`` is the documented run (under 15 minutes on a 2-core machine), ``quick`` a
1-2 minute version with smaller counts, ``smoke`` tiny counts that only check that the
harness works (the CI smoke test).
"""

from __future__ import annotations

from dataclasses import dataclass

# What taskflow's group commit reaches: about 200 tasks of each kind per transaction under
# the throughput scenarios' load, about 15 under the 32 connections of enqueue_overhead.
RAW_LIMIT_BATCHES = (200, 16)


@dataclass(frozen=True)
class Settings:
    """Every knob of one run."""

    mode: str
    # enqueue overhead: closed-loop requests/s, alternating rounds
    enqueue_rounds: int
    enqueue_seconds: float
    enqueue_warmup: float
    enqueue_connections: int
    # throughput: no-op tasks enqueued `per_request` at a time, timed until all ran
    throughput_rounds: int
    throughput_tasks: int
    throughput_per_request: int
    throughput_connections: int
    # raw-driver limit of the throughput scenarios: tasks per transaction; the first size
    # is the one the table's fractions use (see bench/raw_limit.py)
    raw_limit_batches: tuple[int, ...]
    # latency: sequential requests with a pause, then closed-loop load
    latency_samples: int
    latency_pause: float
    latency_loaded_seconds: float
    latency_loaded_connections: int
    # idempotent enqueue with `idempotency_rows` existing rows
    idempotency_rows: int
    idempotency_rounds: int
    idempotency_seconds: float
    # memory: RSS growth over `memory_tasks` after `memory_warmup` tasks
    memory_tasks: int
    memory_warmup: int
    memory_chunk: int
    # schedule lateness: how long the every-second schedule runs
    schedule_seconds: float
    # durability: acknowledged enqueues before kill -9
    durability_enqueues: int
    durability_sleep: float
    durability_recovery: float
    # dashboard: seeded tasks and log lines (lines of each of the 3 big-log tasks), and
    # requests per page after the first (the median of these is the figure)
    dashboard_tasks: int
    dashboard_logs: int
    dashboard_big_log_lines: int
    dashboard_repeats: int
    # cross-process latency: tasks sent at a steady rate to a standalone worker
    cross_process_tasks: int
    cross_process_rate: float
    cross_process_warmup: int
    # features when used (in process): tasks per workload, chain steps, wait() samples
    feature_tasks: int
    feature_steps: int
    feature_samples: int


FULL = Settings(
    mode="full",
    enqueue_rounds=5,
    enqueue_seconds=4.0,
    enqueue_warmup=1.0,
    enqueue_connections=32,
    throughput_rounds=3,
    throughput_tasks=15_000,
    throughput_per_request=100,
    throughput_connections=4,
    raw_limit_batches=RAW_LIMIT_BATCHES,
    latency_samples=500,
    latency_pause=0.01,
    latency_loaded_seconds=4.0,
    latency_loaded_connections=16,
    idempotency_rows=1_000_000,
    idempotency_rounds=3,
    idempotency_seconds=4.0,
    memory_tasks=1_000_000,
    memory_warmup=50_000,
    memory_chunk=50_000,
    schedule_seconds=45.0,
    durability_enqueues=500,
    durability_sleep=2.0,
    durability_recovery=30.0,
    dashboard_tasks=1_000_000,
    dashboard_logs=5_000_000,
    dashboard_big_log_lines=10_000,
    dashboard_repeats=5,
    cross_process_tasks=300,
    cross_process_rate=20.0,
    cross_process_warmup=20,
    feature_tasks=2000,
    feature_steps=200,
    feature_samples=200,
)

QUICK = Settings(
    mode="quick",
    enqueue_rounds=3,
    enqueue_seconds=1.5,
    enqueue_warmup=0.5,
    enqueue_connections=32,
    throughput_rounds=2,
    throughput_tasks=5_000,
    throughput_per_request=100,
    throughput_connections=4,
    raw_limit_batches=RAW_LIMIT_BATCHES,
    latency_samples=200,
    latency_pause=0.005,
    latency_loaded_seconds=1.0,
    latency_loaded_connections=16,
    idempotency_rows=200_000,
    idempotency_rounds=3,
    idempotency_seconds=1.5,
    memory_tasks=100_000,
    memory_warmup=10_000,
    memory_chunk=25_000,
    schedule_seconds=8.0,
    durability_enqueues=500,
    durability_sleep=2.0,
    durability_recovery=20.0,
    dashboard_tasks=20_000,
    dashboard_logs=100_000,
    dashboard_big_log_lines=2_000,
    dashboard_repeats=3,
    cross_process_tasks=100,
    cross_process_rate=20.0,
    cross_process_warmup=10,
    feature_tasks=500,
    feature_steps=50,
    feature_samples=50,
)

SMOKE = Settings(
    mode="smoke",
    enqueue_rounds=1,
    enqueue_seconds=0.5,
    enqueue_warmup=0.2,
    enqueue_connections=4,
    throughput_rounds=1,
    throughput_tasks=300,
    throughput_per_request=100,
    throughput_connections=2,
    raw_limit_batches=RAW_LIMIT_BATCHES,
    latency_samples=20,
    latency_pause=0.005,
    latency_loaded_seconds=0.5,
    latency_loaded_connections=4,
    idempotency_rows=2_000,
    idempotency_rounds=1,
    idempotency_seconds=0.5,
    memory_tasks=2_000,
    memory_warmup=500,
    memory_chunk=1_000,
    schedule_seconds=3.5,
    durability_enqueues=20,
    durability_sleep=0.5,
    durability_recovery=15.0,
    dashboard_tasks=2_000,
    dashboard_logs=10_000,
    dashboard_big_log_lines=300,
    dashboard_repeats=1,
    cross_process_tasks=20,
    cross_process_rate=20.0,
    cross_process_warmup=3,
    feature_tasks=40,
    feature_steps=5,
    feature_samples=5,
)

MODES = {settings.mode: settings for settings in (FULL, QUICK, SMOKE)}
