"""One way to write money, rates and durations, shared by the CLI, the dashboard and the notifications.

* money to the cent, a sub-cent amount to four digits (``$0.95``, ``$0.0042``);
* a rate to the tenth of a cent (``$0.421/h``);
* a duration in the two largest units that matter (``14 s``, ``12 min``, ``2 h 10 min``,
  ``3 d 4 h``), and ``ago`` of it (``4 min ago``).
"""

from __future__ import annotations

DASH = "—"  # a figure that is not known


def usd(amount: float | None) -> str:
    if amount is None:
        return DASH
    if amount != 0 and abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def rate(usd_per_hour: float | None) -> str:
    return DASH if usd_per_hour is None else f"${usd_per_hour:,.3f}/h"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    seconds = max(0.0, seconds)
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(seconds: float | None) -> str:
    return DASH if seconds is None else ("just now" if seconds < 1 else f"{duration(seconds)} ago")
