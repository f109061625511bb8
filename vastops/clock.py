"""Time as an injectable function.

Every rule that depends on "now" takes a ``Clock`` (a zero-argument callable that
returns an aware UTC datetime), so tests move time instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoz(dt: datetime | None) -> str | None:
    """ISO-8601 UTC with a ``Z`` and millisecond precision, fixed width.

    Fixed width keeps the ledger's text timestamps sortable as strings.
    """
    if dt is None:
        return None
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    # isoformat truncates to the millisecond as strftime did, at a fraction of its cost
    # (it is on the hot path of /activity): "...T10:30:00.000+00:00" -> "...T10:30:00.000Z"
    return dt.isoformat(timespec="milliseconds")[:-6] + "Z"


def stamp(dt: datetime) -> str:
    """``isoz`` of a time that is always there: the ledger's text for it."""
    text = isoz(dt)
    assert text is not None
    return text


def parse_isoz(text: str | None) -> datetime | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


class SteadyClock:
    """Wall-clock time that moves with the monotonic clock: the watchdog's "now".

    It starts at the system's wall-clock time and from then on advances with
    ``time.monotonic``, so a step of the system clock (NTP, a VM resumed, an operator's
    ``date -s``) moves neither an idle deadline nor a session's booked runtime.
    ``step()`` says how far the system clock has moved away from it; the watchdog
    audits that (``clock_step``) and rebases it when nothing is being measured.
    """

    def __init__(self, wall: Clock | None = None, mono: Callable[[], float] | None = None):
        import time

        # utcnow looked up at each call, not bound here: the fault tests step it in a real process
        self._wall = wall or (lambda: utcnow())
        # CLOCK_BOOTTIME goes on while the host is suspended (vast.ai bills on); monotonic stops.
        boottime = getattr(time, "CLOCK_BOOTTIME", None)
        self._mono = mono or ((lambda: time.clock_gettime(boottime)) if boottime is not None else time.monotonic)
        self.rebase()

    def rebase(self) -> None:
        self._base_wall, self._base_mono = self._wall(), self._mono()

    def __call__(self) -> datetime:
        return self._base_wall + timedelta(seconds=self._mono() - self._base_mono)

    def system_time(self) -> datetime:
        return self._wall()

    def step(self) -> float:
        """Seconds the system clock is ahead of this one (negative: behind)."""
        return (self._wall() - self()).total_seconds()


class FakeClock:
    """A clock for tests and benchmarks: starts at a fixed instant, moves on demand."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 1, 15, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0) -> datetime:
        self.now += timedelta(seconds=seconds, minutes=minutes)
        return self.now
