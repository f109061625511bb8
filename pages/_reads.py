"""The pages' cached reads, by what changes them, so an action clears only those it changed.

A read cached with ``st.cache_data`` registers itself with the kinds of record it reads
(``changed_by``); an action on the Status page (pages/_status_actions.py) names what it wrote
(``forget``), and only the reads of that kind are cleared. A Keep running writes an audit row
and nothing else: the Costs page's reports stay; a Stop ends a session: they go. The settled
days of a long period (pages/costs.py ``history``) are not registered at all: an action does
not change the past, and the ledger's fingerprint in their key says when they are stale.

The functions register when their page runs (a page never run has nothing cached either);
Streamlit keys a cached function's entries by the function, so the ``clear`` of its latest
definition clears the entries of every run before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

SESSIONS = "sessions"  # the sessions and what they cost up to now (Costs: reports, charges beside the ledger, idle waste)
AUDIT = "audit"  # the audit trail (the Audit page's rows, counts, persons)
HEALTH = "health"  # the instance's /health answer (the Status page's probe)
KINDS = (SESSIONS, AUDIT, HEALTH)


class Clearable(Protocol):
    def clear(self) -> None: ...


C = TypeVar("C", bound=Clearable)

_CLEARS: dict[str, dict[str, Callable[[], None]]] = {kind: {} for kind in KINDS}


def _name(read: Clearable) -> str:
    """The function behind a cached read, by its file and name: the same on every run of its page."""
    fn = getattr(read, "__wrapped__", read)
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename if code else ''}:{getattr(fn, '__qualname__', repr(fn))}"


def changed_by(*kinds: str) -> Callable[[C], C]:
    """Register a cached read (``@st.cache_data`` below this decorator) with the kinds of record it reads."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds of record: {sorted(unknown)}")

    def register(read: C) -> C:
        for kind in kinds:
            _CLEARS[kind][_name(read)] = read.clear
        return read

    return register


def forget(*kinds: str) -> None:
    """Clear the cached reads of these kinds (every entry of each), and no other."""
    clears = {name: clear for kind in kinds for name, clear in _CLEARS[kind].items()}
    for clear in clears.values():
        clear()


def registered(kind: str) -> list[str]:
    """The reads registered with ``kind``, by name (for tests)."""
    return sorted(_CLEARS[kind])
