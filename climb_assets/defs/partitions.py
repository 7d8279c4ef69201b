"""Partition axes: corpus shards (dynamic, one per file) and bootstrap iterations (ordered).

Iterations use a daily time-window definition only because Dagster lets time-window partitions,
and nothing else, depend on their own earlier partitions (`TimeWindowPartitionMapping` with
an offset). The date format
`iter-%j` (day of year) turns day N into the readable key `iter-00N`.
"""

from __future__ import annotations

import dagster as dg

from climb_assets.store import iteration_key

CORPUS_SHARDS = dg.DynamicPartitionsDefinition(name="corpus_shards")

ITERATION_FORMAT = "iter-%j"
MAX_ITERATIONS = 365  # one per day of the (non-leap) year 1900


def iterations_partitions(count: int) -> dg.TimeWindowPartitionsDefinition:
    if not 1 <= count < MAX_ITERATIONS:
        raise ValueError(f"iteration count must be in 1..{MAX_ITERATIONS - 1}, got {count}")
    return dg.TimeWindowPartitionsDefinition(
        start=iteration_key(1),
        end=iteration_key(count + 1),
        cron_schedule="0 0 * * *",
        fmt=ITERATION_FORMAT,
    )


PREVIOUS_ITERATION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
