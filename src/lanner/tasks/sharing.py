"""Eval and predict over several processes (``--devices N``, torchrun, srun): each process infers on
a contiguous part of the images (:class:`lanner.engine.distributed.Part`; whole images, so the tiles
of a tiled image stay in one process), and process 0 gets every part's results back in the images'
order, then scores, prints and writes alone: the numbers and files one process would give."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from lanner.data.records import Dataset
from lanner.engine.distributed import Part


def part_of(dataset: Dataset, part: Part) -> Dataset:
    """This process's images of ``dataset`` (the issues met reading it stay with the whole)."""
    return replace(dataset, records=part.of(dataset.records), issues=[])


def gather_shares(part: Part, share) -> list | None:
    """Every process's ``share`` in rank order, on process 0; None on the others (their work is done)."""
    shares = part.gather([share])
    return shares if part.is_main else None


def print_skipped_elsewhere(console: Console, skipped: list[list[str]]) -> None:
    """The images the other processes could not read (``skipped``: each process's, in rank order);
    process 0 printed its own as it met them."""
    for text in (text for share in skipped[1:] for text in share):
        console.print(f"[yellow]skipped[/] {text}", highlight=False)
