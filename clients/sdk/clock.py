"""Clock sync for rooms: NTP's clock filter over `ping`/`pong` exchanges."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One ping/pong exchange: `offset_s` = server clock - local clock, `rtt_s` its round trip."""

    offset_s: float
    rtt_s: float


class ClockSync:
    """NTP's clock filter, as docs/protocol.md prescribes: each `ping`/`pong` exchange gives an
    offset ((t1 - t0) + (t2 - t3)) / 2 and a round trip (t3 - t0) - (t2 - t1); the estimate is
    the offset of the fastest of the last `window` exchanges (its error is at most rtt / 2)."""

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self.samples: list[ClockSample] = []
        self._rough: float | None = None

    def add(self, t0: float, t1: float, t2: float, t3: float) -> ClockSample:
        sample = ClockSample(((t1 - t0) + (t2 - t3)) / 2.0, max(0.0, (t3 - t0) - (t2 - t1)))
        self.samples = [*self.samples[-(self.window - 1) :], sample]
        return sample

    def rough(self, server_time: float, local_time: float) -> None:
        """A first guess from `welcome.server_time`, used until an exchange finishes."""
        if self._rough is None:
            self._rough = server_time - local_time

    @property
    def best(self) -> ClockSample | None:
        return min(self.samples, key=lambda s: s.rtt_s) if self.samples else None

    @property
    def offset_s(self) -> float | None:
        best = self.best
        return best.offset_s if best is not None else self._rough

    @property
    def rtt_s(self) -> float | None:
        best = self.best
        return best.rtt_s if best is not None else None
