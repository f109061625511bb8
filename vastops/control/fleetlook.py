"""A fleet's looks at vast.ai: one list call for every instance instead of a show call each.

vast allows about one show call per 2 s per key (docs/vast-api.md §5): twenty instances
looking every 20 s, faster while one starts, would meet that limit. So a fleet's members
share a ``FleetLook``: each member's show is answered from a list call filtered to the
fleet's ids (``VastClient.list_instances``, paged), and callers who arrive while none is due
share the next one.

An answer is never older than the question: a caller takes the first list call that *began*
after it asked (the ledger's reconciliation trusts an observation from when it was asked,
``Observer.observe``). List calls are at least ``LIST_EVERY_S`` apart, so a look waits at most
that long plus the call. A failed list call fails every caller that waited for it, as a
failed show would; the next caller tries again.

Starts, stops and everything else stay each member's own calls (``MemberClient``): one
instance's failing stop never waits on another's. The account's credit and the pending price
rises, which every member keeps, are asked once for the fleet.

The state PUT (a start, a stop, a reboot) is limited to about one a second per key too, and a
429 costs a stop its retry's backoff: twenty starts at once would make a stop that falls due
meanwhile late by seconds. So the fleet's state changes take turns (``StateGate``), one per
``STATE_EVERY_S``, a stop waiting goes before every start waiting, and a start leaves the turn
after it free (starts go at most every other turn): a stop that falls due while twenty starts
queue waits at most one turn, plus the stops ahead of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

from vastops.vast import ErrorKind, Instance, PriceRise, VastClient, VastError

LIST_EVERY_S = 1.0  # vast's v1 list: about one call a second per key
CREDIT_SHARED_S = 30.0  # each member keeps the credit once a minute; the fleet asks vast once for all of them
RISES_SHARED_S = 120.0  # the pending price rises (every contract's): each member's money round reads them
STATE_EVERY_S = 1.0  # vast's state PUT (a start, a stop): about one a second per key
GONE_RECHECK_S = 60.0  # an id a show confirmed gone is not shown again for this long (a typo in the fleet file)


class FleetLook:
    def __init__(self, client: VastClient, ids: Sequence[int], *, every_s: float = LIST_EVERY_S, now: Callable[[], float] = time.monotonic):
        self._client = client
        self.ids = tuple(ids)
        self.every_s = every_s
        self._now = now
        self._cond = threading.Condition()
        self._fetching = False
        self._began = -1e18  # when the newest finished list call began (monotonic)
        self._next = -1e18  # no list call begins before this
        self._found: dict[int, Instance] = {}
        self._bad: dict[int, str] = {}  # rows vast listed that could not be read, by id
        self._error: VastError | None = None
        self._gone: dict[int, float] = {}  # ids a show confirmed absent, and when
        self.calls = 0  # list calls made (the /metrics and the tests)
        self._shared = threading.Condition()  # the account's calls: credit, price rises
        self._cache: dict[str, tuple[float, object]] = {}  # name -> (when asked, the value or the error)
        self._asking: set[str] = set()
        self.gate = StateGate(now=now)

    def show(self, instance_id: int) -> Instance:
        """The instance as the first list call begun after this question saw it.

        An id the list does not name is confirmed by a show of its own before it is called gone
        (``VastError`` NOT_FOUND): absence from a filtered, paged list is weaker proof than vast's
        "no such instance", and a session is closed on it."""
        listed = self._listed(instance_id)
        if listed is not None:
            return listed
        with self._cond:
            gone = self._gone.get(instance_id)
        if gone is not None and self._now() - gone < GONE_RECHECK_S:
            raise VastError(ErrorKind.NOT_FOUND, f"vast.ai has no instance {instance_id}; check its id in the fleet.", 404)
        try:
            return self._client.show_instance(instance_id)  # the list missed it: the show's answer stands
        except VastError as exc:
            if exc.kind == ErrorKind.NOT_FOUND:
                with self._cond:
                    self._gone[instance_id] = self._now()
            raise

    def _listed(self, instance_id: int) -> Instance | None:
        """The list's row for the id (None: not listed), from a list call begun after this question; its error raised."""
        asked = self._now()
        with self._cond:
            while True:
                if self._began >= asked:  # a list call begun after the question has answered
                    return self._row(instance_id)
                if not self._fetching:
                    wait = self._next - self._now()
                    if wait <= 0:
                        self._fetching = True
                        break
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
        began = self._now()
        found: dict[int, Instance] = {}
        bad: dict[int, str] = {}
        error: VastError | None = None
        answered = False
        try:
            found = self._client.list_instances(self.ids, pause=lambda: time.sleep(self.every_s), bad=bad)
            answered = True
        except VastError as exc:
            error, answered = exc, True
        except Exception as exc:  # any other failure is vast.ai's answer unread, never "every instance gone"
            error, answered = (
                VastError(ErrorKind.UNAVAILABLE, f"vast.ai's instance list could not be read ({type(exc).__name__}); try again shortly."),
                True,
            )
        finally:
            with self._cond:
                self._fetching = False
                self._next = began + self.every_s
                self.calls += 1
                if answered:  # (an interrupt answers nothing: the waiters ask again)
                    self._found, self._bad, self._error = (found, bad, None) if error is None else (self._found, self._bad, error)
                    self._began = began
                self._cond.notify_all()
        with self._cond:
            return self._row(instance_id)

    def _row(self, instance_id: int) -> Instance | None:
        if self._error is not None:
            raise self._error
        if instance_id in self._bad:
            raise VastError(
                ErrorKind.UNAVAILABLE, f"vast.ai's row for instance {instance_id} could not be read ({self._bad[instance_id]})."
            )
        return self._found.get(instance_id)

    def credit(self) -> float:
        """The account's credit, asked at most once per ``CREDIT_SHARED_S`` for the whole fleet (it is the account's, not an instance's)."""
        return cast(float, self._account("credit", CREDIT_SHARED_S, self._client.credit))

    def price_rises(self) -> list[PriceRise]:
        """The account's pending price rises, asked at most once per ``RISES_SHARED_S`` for the fleet."""
        return cast("list[PriceRise]", self._account("price_rises", RISES_SHARED_S, self._client.price_rises))

    def _account(self, name: str, fresh_s: float, ask: Callable[[], object]) -> object:
        """One of the account's figures: the kept answer (or failure) while fresh; one call in flight for
        everyone, and while it is, the last answer for whoever has one (a slow vast.ai never queues the fleet)."""
        with self._shared:
            while True:
                kept = self._cache.get(name)
                if kept is not None and (self._now() - kept[0] < fresh_s or name in self._asking):
                    return _value(kept[1])
                if name not in self._asking:
                    self._asking.add(name)
                    break
                self._shared.wait()
        asked = self._now()
        value: object = None
        try:
            value = ask()
        except Exception as exc:  # kept for the window and raised to each caller, as the call would
            value = exc
        finally:
            with self._shared:
                if name in self._asking:
                    self._cache[name] = (asked, value)
                self._asking.discard(name)
                self._shared.notify_all()
        return _value(value)

    def missing(self) -> list[int]:
        """The fleet's ids the last good list call did not find (the start's check: each is named)."""
        with self._cond:
            return [i for i in self.ids if i not in self._found] if self._error is None and self._began > -1e18 else []


def _value(kept: object) -> object:
    if isinstance(kept, Exception):
        raise kept
    return kept


class StateGate:
    """The fleet's state changes in turns: one per ``every_s``, a waiting stop before every waiting start,
    a start at most every other turn (the one after it is kept for a stop)."""

    def __init__(self, every_s: float = STATE_EVERY_S, *, now: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self._now = now
        self._cond = threading.Condition()
        self._last = -1e18  # when the last call was let through
        self._stops_waiting = 0

    def turn(self, *, stop: bool) -> None:
        """Wait for this call's turn (returns when it may be sent)."""
        with self._cond:
            if stop:
                self._stops_waiting += 1
            try:
                while True:
                    wait = self._last + self.every_s * (1 if stop else 2) - self._now()
                    if wait <= 0 and (stop or self._stops_waiting == 0):
                        self._last = self._now()
                        self._cond.notify_all()
                        return
                    self._cond.wait(wait if wait > 0 else None)
            finally:
                if stop:
                    self._stops_waiting -= 1
                    self._cond.notify_all()


class MemberClient(VastClient):
    """One member's client: its own key and session for every call, its show answered by the fleet's list call."""

    def __init__(self, api_key: str, base_url: str, look: FleetLook):
        super().__init__(api_key, base_url)
        self._fleet_look = look

    def show_instance(self, instance_id: int) -> Instance:
        return self._fleet_look.show(instance_id)

    def credit(self) -> float:
        return self._fleet_look.credit()

    def price_rises(self) -> list[PriceRise]:
        return self._fleet_look.price_rises()

    def start(self, instance_id: int) -> None:
        self._fleet_look.gate.turn(stop=False)
        super().start(instance_id)

    def stop(self, instance_id: int) -> None:
        self._fleet_look.gate.turn(stop=True)
        super().stop(instance_id)

    def reboot(self, instance_id: int) -> None:
        self._fleet_look.gate.turn(stop=False)
        super().reboot(instance_id)
