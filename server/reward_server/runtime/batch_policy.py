"""Which queued inputs form the next batch, and when: the batching policy as a pure unit (no threads, no
clock of its own, no futures), after TEI's core/src/queue.rs. The batcher (batching.py) holds the queue
and the thread; it asks this policy and applies the answer.

- A batch goes when the queue holds max_batch_size inputs, or enough tokens to fill the token budget,
  or a preferred batch size, or when its oldest input has waited max_queue_delay (then with what is there).
- The oldest input always goes into the next batch (no input waits behind more than the inputs queued
  before it); its companions are the queued inputs closest to it in length (the older first among equals)
  that keep the batch within max_batch_size and max_batch_tokens (padded tokens = rows x longest input).
- Work that runs alone (a shared-prompt group, a task on the instance's thread) takes no companions and
  joins no batch.
- An input whose deadline has passed is dropped before compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A queued entry as the policy sees it: its length in tokens, or ALONE for work that runs by itself.
ALONE = None


@dataclass(frozen=True)
class BatchPolicy:
    """The dynamic_batching settings of one model instance, and the decisions they make."""

    max_batch_size: int
    max_queue_delay_s: float
    preferred_batch_sizes: tuple[int, ...] = ()  # ascending
    max_batch_tokens: int = 0  # padded tokens per batch; 0: no token budget

    def size_ready(self, queued: int, queued_tokens: int) -> int:
        """The batch size to dispatch now, without waiting out the delay; 0: keep waiting."""
        if queued >= self.max_batch_size:
            return self.max_batch_size
        if self.max_batch_tokens and queued_tokens >= self.max_batch_tokens:
            return queued  # enough work to fill the budget; companions() decides how much fits
        fitting = [size for size in self.preferred_batch_sizes if size <= queued]
        return fitting[-1] if fitting else 0

    def dispatch_at(self, oldest_enqueued: float) -> float:
        """When the oldest input's wait is up: the batch goes then with whatever is queued."""
        return oldest_enqueued + self.max_queue_delay_s

    def size_due(self, queued: int) -> int:
        """The batch size once the delay is up."""
        return min(queued, self.max_batch_size)

    def companions(self, head_length: int, lengths: Sequence[int | None], size: int) -> list[int]:
        """Indexes into `lengths` (the queue after its oldest input, whose length is `head_length`) of the
        inputs that join it, in the order chosen: the closest in length first, the older first among
        equals, skipping ALONE entries and inputs that would take the batch over the token budget."""
        if size < 2:
            return []
        order = sorted((abs(n - head_length), i) for i, n in enumerate(lengths) if n is not ALONE)
        picked: list[int] = []
        width = head_length
        for _, index in order:
            if len(picked) + 1 >= size:
                break
            padded_width = max(width, lengths[index] or 0)
            if self.max_batch_tokens and padded_width * (len(picked) + 2) > self.max_batch_tokens:
                continue
            picked.append(index)
            width = padded_width
        return picked


def expired(deadline: float | None, now: float) -> bool:
    """Whether an input with this deadline (a time.monotonic() value; None: none) must be dropped now."""
    return deadline is not None and now >= deadline
