"""The idle rule: when auto-shutdown fires.

A plain function with its inputs as arguments (as jupyterhub-idle-culler keeps its
culling rule), so the watchdog's timer, the status report and the tests all ask
the same question the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def idle_deadline(
    session_start: datetime | None,
    last_activity: datetime | None,
    idle_minutes: float,
    *,
    idle_from: datetime | None = None,
    starting: bool = False,
) -> datetime | None:
    """The moment the instance is idle long enough to stop, or None.

    None when nothing runs, and None while a start is still pending (``starting``):
    a model that takes ten minutes to load is not idle while it loads (never act on
    a server in transition). Otherwise the clock starts at the latest of the session
    start, the last activity and ``idle_from`` (when the last start settled), so
    times from before the current session never shorten it.
    """
    if session_start is None or starting:
        return None
    since = max(t for t in (session_start, last_activity, idle_from) if t is not None)
    return since + timedelta(minutes=idle_minutes)


def minutes_left(deadline: datetime | None, now: datetime) -> float | None:
    if deadline is None:
        return None
    return max(0.0, (deadline - now).total_seconds() / 60.0)
