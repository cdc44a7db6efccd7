"""A seeded reservoir of whole prompts: what the batch tests of a group of any size keep.

The batch tests permute whole prompts (conversations), so the sample they test must hold every output of
each prompt it holds. The reservoir keeps the prompts of smallest *priority*, a hash of the seed and the
prompt key (never of an output's text, score or embedding), for as long as their outputs number at most
``max_outputs``: the longest run of prompts in priority order that fits. A prompt evicted once leaves for
good (any later prompt of larger priority is refused), so the final content is the same whatever the order
of the stream, and memory stays bounded by ``max_outputs`` outputs (by one prompt's outputs when a single
prompt has more than that: the first prompt in priority order is always kept).

The choice depends only on the prompt keys and on how many outputs each has, not on what the outputs say,
so under the null hypothesis the kept prompts are still exchangeable with the approved calibration prompts
and the permutation tests stay exact (``tests/test_stream.py`` measures their level on a reservoir).
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Any


def priority(seed: int, key: str) -> int:
    """A prompt's place in the reservoir's order: 64 bits of SHA-256 of the seed and the key."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{key}".encode("utf-8", "surrogatepass")).digest()[:8], "big")


@dataclass
class PromptReservoir:
    """Whole prompts of smallest priority, with their outputs' items, up to ``max_outputs`` outputs."""

    max_outputs: int
    seed: int
    items: dict[str, list[Any]] = field(default_factory=dict)
    n_kept: int = 0
    n_seen: int = 0
    #: Every prompt at or above this priority is out (``None``: none evicted yet).
    cut: int | None = None
    _heap: list[tuple[int, str]] = field(default_factory=list)  # (-priority, key): the largest first

    def add(self, key: str, item: Any) -> None:
        """Offer one output (``item``) of the prompt ``key``."""
        self.n_seen += 1
        held = self.items.get(key)
        if held is None:
            rank = priority(self.seed, key)
            if self.cut is not None and rank >= self.cut:
                return
            held = self.items[key] = []
            heapq.heappush(self._heap, (-rank, key))
        held.append(item)
        self.n_kept += 1
        while self.n_kept > self.max_outputs and len(self.items) > 1:
            neg, evicted = heapq.heappop(self._heap)
            self.cut = -neg
            self.n_kept -= len(self.items.pop(evicted))

    def merge(self, other: PromptReservoir) -> None:
        """Add the outputs ``other`` was offered (same ``max_outputs`` and ``seed``): the result is the reservoir
        of both streams together.

        ``other`` holds every prompt that the reservoir of both streams keeps, since a prompt's place depends
        only on the outputs of prompts of smaller priority and ``other`` saw at most as many as both streams
        did; so re-offering what ``other`` kept, and dropping what either stream had already evicted, gives
        exactly the reservoir of one pass over both streams (``tests/test_stream.py``). A prompt's outputs keep
        their order: ``self``'s first, then ``other``'s.
        """
        if (other.max_outputs, other.seed) != (self.max_outputs, self.seed):
            raise ValueError(f"cannot merge a reservoir of max_outputs {other.max_outputs}, seed {other.seed} into "
                             f"one of max_outputs {self.max_outputs}, seed {self.seed}")
        n_seen = self.n_seen + other.n_seen
        for key, items in other.items.items():
            for item in items:
                self.add(key, item)
        self.n_seen = n_seen
        if other.cut is not None and (self.cut is None or other.cut < self.cut):
            self.cut = other.cut
        while self._heap and self.cut is not None and -self._heap[0][0] >= self.cut and len(self.items) > 1:
            _, evicted = heapq.heappop(self._heap)
            self.n_kept -= len(self.items.pop(evicted))

    @property
    def complete(self) -> bool:
        """Whether every output offered is kept."""
        return self.n_kept == self.n_seen

    def kept(self) -> list[tuple[str, Any]]:
        """``(prompt key, item)`` of every kept output, prompts in key order."""
        return [(key, item) for key in sorted(self.items) for item in self.items[key]]

    def to_dict(self) -> dict[str, Any]:
        return {"max_outputs": self.max_outputs, "seed": self.seed, "prompts": len(self.items),
                "outputs": self.n_kept, "of_outputs": self.n_seen, "unit": "whole prompts, by seeded hash of the key"}
