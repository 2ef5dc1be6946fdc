"""What the ControlNet extension's reference_only and reference_adain machines share
(models/reference_attention.py, models/reference_adain.py): a UNet call in "write" mode fills
their banks, the next call ("read") uses them and empties them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

__all__ = ["ReferenceBanks"]

T = TypeVar("T")


class ReferenceBanks(ABC):
    """The write / read cycle over a machine's banks: whether a call is `writing`, the unit's
    `weight` (a bank saves while it is above the bank's rank), the writes' `style_fidelity`
    and the read's `uncond_rows`. A machine says what its banks save and how a read uses
    them, and how they are emptied (`clear`)."""

    def __init__(self) -> None:
        self.writing = False
        self.weight = 1.0
        self.style_fidelity = 0.0
        self.uncond_rows = 0

    def write(self, run: Callable[[], T], *, weight: float, style_fidelity: float) -> T:
        """`run()` (a UNet call on the noised reference) with the banks ranked below `weight`
        saving (reference_only: the layers' input; reference_adain: the blocks' statistics);
        `style_fidelity` clamped to [0, 1]."""
        self.writing, self.weight = True, float(weight)
        self.style_fidelity = min(1.0, max(0.0, float(style_fidelity)))
        try:
            return run()
        finally:
            self.writing = False

    def read(self, run: Callable[[], T], *, uncond_rows: int) -> T:
        """`run()` (the UNet call) with the saved tokens injected or statistics applied; its
        first `uncond_rows` rows are unconditional. The banks are empty afterwards."""
        self.uncond_rows = int(uncond_rows)
        try:
            return run()
        finally:
            self.clear()

    @abstractmethod
    def clear(self) -> None:
        """Empty every bank."""
