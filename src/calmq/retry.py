"""Retry policy: exponential backoff with jitter, as pure functions (no store, no clock)."""

from __future__ import annotations

import dataclasses
import random

from calmq.errors import ConfigurationError


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``n`` (1-based): ``min(cap, base * factor ** (n - 1))``, then
    shortened by up to ``jitter`` (a fraction) at random.

    Jitter spreads the retries of jobs that failed together (an outage of the SMS provider)
    so they do not hit it again in lock-step; it only ever shortens, so ``cap`` holds.
    """

    base: float = 2.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                f"backoff needs base >= 0, cap >= 0, factor >= 1 and 0 <= jitter <= 1, got {self}"
            )

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        exponent = max(0, retry_number - 1)
        # Cap the exponent before raising: factor ** 1000 would overflow a float.
        raw = self.base * self.factor ** min(exponent, 64)
        delay = min(self.cap, raw)
        draw = (rng or random).random()
        return delay * (1.0 - self.jitter * draw)
