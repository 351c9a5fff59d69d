"""Which samples of a shard set each process and each loader worker reads in an epoch, in which order.

Everything here is arithmetic on sample counts, the same on every process, so no process needs to
ask another what it reads:

1. The shards are put in a seeded order for the epoch; their samples, in that order, form the
   epoch's sequence of N samples.
2. Process r of W takes positions [r * P, (r + 1) * P) with P = ceil(N / W). When W does not divide
   N, the last process's range runs past N and wraps to the sequence's first samples (as torch's
   DistributedSampler pads): every process takes the same number of steps, every sample is read at
   least once, and W * P - N < W samples are read twice. With one process each sample is read once.
3. A process's P samples are cut into batches (a last batch of one sample is folded into the one
   before, as the cached path does). Loader worker k of K produces the process's batches k, k + K,
   k + 2K, ... (torch's DataLoader hands out the workers' batches in turn), from its own contiguous
   stretch of the process's range, so each worker reads different shards (or parts of shards).
4. A worker shuffles its stretch in windows of ``window`` samples (a seeded permutation of each
   window). Unlike a classic shuffle buffer, the sample at any output position is known without
   reading what came before, so a resumed epoch starts reading at the window holding its next
   sample and continues at exactly that sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """Consecutive samples [start, stop) of shard ``shard`` (its index in the shard set)."""

    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class EpochPlan:
    """One process's view of an epoch: whose samples, what batches, how many loader workers."""

    counts: tuple[int, ...]  # samples per shard, in the shard set's order
    seed: int
    epoch: int
    batch_size: int
    rank: int = 0
    world: int = 1
    workers: int = 1
    window: int = 1024

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def per_process(self) -> int:
        return math.ceil(self.total / self.world)

    def batch_sizes(self) -> list[int]:
        """Sizes of this process's batches in the order it trains on them."""
        return batch_sizes(self.per_process, self.batch_size)

    def shard_order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        return rng.permutation(len(self.counts))


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """``n`` samples in batches of ``batch_size``; a last batch of one joins the one before it
    (batch norm cannot train on one sample)."""
    sizes = [min(batch_size, n - s) for s in range(0, n, batch_size)]
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2:] = [sizes[-2] + 1]
    return sizes


def steps_per_process(total: int, batch_size: int, world: int) -> int:
    return len(batch_sizes(math.ceil(total / world), batch_size))


@dataclass(frozen=True)
class WorkerShare:
    """One loader worker's part of a process's epoch: its batches and where its samples lie."""

    batches: list[int]  # the process's batch numbers this worker produces, in order
    sizes: list[int]  # their sizes
    start: int  # first position of its stretch in the epoch's sequence (before wrapping)

    @property
    def count(self) -> int:
        return sum(self.sizes)


def worker_shares(plan: EpochPlan) -> list[WorkerShare]:
    """Every worker's share: worker k makes batches k, k + K, ..., from consecutive samples."""
    sizes = plan.batch_sizes()
    position, shares = plan.rank * plan.per_process, []
    for k in range(plan.workers):
        mine = list(range(k, len(sizes), plan.workers))
        share = WorkerShare(mine, [sizes[b] for b in mine], position)
        shares.append(share)
        position += share.count
    return shares


def spans(plan: EpochPlan, start: int, stop: int) -> list[Span]:
    """The samples at positions [start, stop) of the epoch's sequence (wrapping past its end) as
    runs of consecutive samples of one shard."""
    order = plan.shard_order()
    counts = np.asarray(plan.counts)[order]
    ends = np.cumsum(counts)
    out: list[Span] = []
    position = start
    while position < stop:
        at = position % plan.total
        i = int(np.searchsorted(ends, at, side="right"))  # the shard holding position ``at``
        first = at - (int(ends[i]) - int(counts[i]))
        take = min(int(counts[i]) - first, stop - position)
        out.append(Span(int(order[i]), first, first + take))
        position += take
    return out


def window_permutation(plan: EpochPlan, worker: int, window_index: int, size: int) -> np.ndarray:
    """The order of one window's ``size`` samples (seeded by epoch, process, worker and window)."""
    rng = np.random.default_rng([plan.seed, plan.epoch, plan.rank, worker, window_index, 2])
    return rng.permutation(size)


def skipped_batches(steps_done: int, worker: int, workers: int) -> int:
    """How many of ``worker``'s batches come before the process's batch number ``steps_done``."""
    return max(0, math.ceil((steps_done - worker) / workers))
