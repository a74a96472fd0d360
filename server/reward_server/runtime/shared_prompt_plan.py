"""The shared-prompt plan: which Rank candidates can share a prompt's computation, the longest token
prefix common to all. The core plans here; a backend that declares `supports_shared_prompt` computes
the group (PyTorch: backends/pytorch/shared_prompt.py).

The prefix is taken from the encoded candidates themselves, not from the prompt tokenized alone: a
prompt format or tokenizer that merges tokens across the prompt/response boundary, left truncation
that cuts each candidate differently, or a reward token appended after the prompt all show up as a
shorter common prefix, never as a wrong one. A prefix too short to pay leaves the plain path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

# Below this many shared tokens, one plain batch costs about as much as prefix + expanded suffixes.
MIN_SHARED_TOKENS = 32


@dataclass(frozen=True)
class SharedPromptGroup:
    prefix: tuple[int, ...]
    suffixes: tuple[tuple[int, ...], ...]  # one per candidate, each at least one token

    @property
    def tokens(self) -> tuple[int, ...]:
        """Every token the shared computation reads: the prefix once, then each suffix."""
        return self.prefix + tuple(token for suffix in self.suffixes for token in suffix)

    @property
    def computed_tokens(self) -> int:
        """Tokens computed: the prefix once, the suffixes right-padded to the longest."""
        return len(self.prefix) + len(self.suffixes) * max(len(suffix) for suffix in self.suffixes)


def plan_shared_prompt(
    sequences: Sequence[tuple[int, ...]], min_shared: int = MIN_SHARED_TOKENS
) -> SharedPromptGroup | None:
    """The common prefix and each sequence's rest, or None when fewer than 2 sequences or the prefix is short.
    The prefix stops one token before the end of the shortest sequence:
    the score is read at a suffix's last token."""
    if len(sequences) < 2:
        return None
    common = len(os.path.commonprefix(list(sequences)))
    common = min(common, min(len(ids) for ids in sequences) - 1)
    if common < min_shared:
        return None
    return SharedPromptGroup(tuple(sequences[0][:common]), tuple(tuple(ids[common:]) for ids in sequences))
