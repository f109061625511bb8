"""The idle rule: when auto-shutdown fires.

A plain function with its inputs as arguments (as jupyterhub-idle-culler keeps its
culling rule), so the watchdog's timer, the status report and the tests all ask
the same question the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def idle_deadline(session_start: datetime | None, last_activity: datetime | None, idle_minutes: float) -> datetime | None:
    """The moment the instance is idle long enough to stop, or None if nothing runs.

    The clock starts at the later of the session start and the last activity, so
    activity from before the current session never shortens it.
    """
    if session_start is None:
        return None
    since = max(session_start, last_activity) if last_activity else session_start
    return since + timedelta(minutes=idle_minutes)


def minutes_left(deadline: datetime | None, now: datetime) -> float | None:
    if deadline is None:
        return None
    return max(0.0, (deadline - now).total_seconds() / 60.0)
