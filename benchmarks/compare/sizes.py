"""How big each measurement is: the full run and the `--quick` smoke run.

opto's sizes are capped where it would take too long or too much memory;
the page names every cap (see `CAPS`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    # Per-call and per-operation figures, the same counts on both sides:
    # the fastest of `repeats` burst loops, then one sustained loop.
    call_burst: int               # calls per burst loop
    call_sustained: int           # calls in the sustained loop
    op_burst: int                 # calls of the 8-operation kernel per burst loop
    op_sustained: int
    repeats: int
    memory_counts_ours: tuple[int, ...]
    memory_counts_opto: tuple[int, ...]
    chain_nodes_ours: tuple[int, ...]
    chain_nodes_opto: tuple[int, ...]
    steps: int                    # optimisation steps timed per configuration
    processes: int                # processes of the multi-process step figure
    program_timeout_s: float      # one measurement program may run this long


FULL = Sizes(
    call_burst=2_000, call_sustained=20_000,
    op_burst=500, op_sustained=5_000,
    repeats=5,
    memory_counts_ours=(10_000, 100_000, 1_000_000),
    memory_counts_opto=(10_000, 100_000),
    chain_nodes_ours=(1_000, 4_000, 16_000, 100_000),
    chain_nodes_opto=(1_000, 4_000, 16_000),
    steps=10, processes=4,
    program_timeout_s=1200.0,
)

QUICK = Sizes(
    call_burst=200, call_sustained=1_000,
    op_burst=50, op_sustained=200,
    repeats=2,
    memory_counts_ours=(1_000, 3_000),
    memory_counts_opto=(1_000, 3_000),
    chain_nodes_ours=(50, 200),
    chain_nodes_opto=(50, 200),
    steps=1, processes=2,
    program_timeout_s=120.0,
)

# The unit suite's smoke test: proves the harness runs end to end, in seconds.
SMOKE = Sizes(
    call_burst=50, call_sustained=100,
    op_burst=20, op_sustained=40,
    repeats=1,
    memory_counts_ours=(200, 400),
    memory_counts_opto=(200, 400),
    chain_nodes_ours=(20,),
    chain_nodes_opto=(20,),
    steps=1, processes=2,
    program_timeout_s=60.0,
)

# Why opto's runs stop where they stop (shown on the page next to the figure,
# with the measured growth that justifies the cap).
CAPS = {
    "memory": "opto keeps every node for the life of the process, so its run stops at the largest count above",
    "build": "opto's backward pass grows super-linearly, so its runs stop at the largest chain above; "
             "the next size would take minutes",
}
