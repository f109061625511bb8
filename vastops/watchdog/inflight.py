"""The gateway's LLM requests in flight: what ``POST /infra/vast/activity`` says with a body.

A body ``{"request_id", "phase": "start"|"end", "consumer", "model", "prompt_tokens",
"completion_tokens"}`` tells the watchdog that an LLM request began or ended. A
request between its start and its end holds the instance awake; one whose end never
comes counts as ending ``VAST_REQUEST_TTL_S`` after its start. The idle rule
(vastops/stops.py) takes one figure from here, ``until``: the latest moment a request
holds the instance (the newest start in flight + TTL, or the latest TTL expiry).

``InFlight`` is the watchdog's memory of them: the hot path never touches SQLite
(money first: a slow ledger must not slow the gateway or lose a hold). The watchdog's
once-a-second flush takes the rows that changed (``take``) and writes them to the
ledger's ``requests`` table in one transaction, so costs per consumer can be computed
and another process's status sees what is in flight.

Only the event loop's thread changes an ``InFlight``; other threads (the status of
``/metrics``, warnings, the heartbeat) read only its scalars (``until``, ``count``).

``parse_report`` is the body's validation, without pydantic (it is on every LLM
request's path): the same rules as the OpenAPI document's ``ActivityIn`` schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Required, TypedDict, cast

from vastops.ledger.rows import OpenRequest, RequestReport

_decode = json.JSONDecoder().decode
MAX_ID_CHARS = 200  # request_id, consumer, model: bounded, so a bad gateway cannot fill memory or the ledger
MAX_TOKENS = 10**9
FIELDS = frozenset({"request_id", "phase", "consumer", "model", "prompt_tokens", "completion_tokens", "instance"})
MAX_INSTANCE_CHARS = 100  # a fleet member's name or id (vastops/fleet.py)
PHASES = ("start", "end")
# Bounds on memory whatever the gateway sends (a bug that sends only starts, ids that repeat):
MAX_OPEN = 100_000  # beyond it the oldest request in flight is given up (the hold is the newest's anyway)
MAX_ENDED = 100_000  # ended ids remembered, so a repeated end counts once and a late start holds nothing
MAX_PENDING = 200_000  # rows kept for the ledger while it fails; beyond it the oldest are dropped


class ReportFields(TypedDict, total=False):
    """What a request's report says beyond its id and phase (each optional)."""

    consumer: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


class ReportBody(ReportFields, total=False):
    """A body of ``POST /infra/vast/activity`` as a reporter sends it (ActivityIn; ``Report`` once parsed)."""

    request_id: Required[str]
    phase: Required[str]  # "start" | "end"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much, on every request
class Report:
    """One body of ``POST /infra/vast/activity``."""

    request_id: str
    phase: str  # "start" | "end"
    consumer: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    instance: str | None = None  # a fleet's member it is for (else the model's, else the default)

    @property
    def carries_more(self) -> bool:
        """Whether it says anything beyond its id and phase (worth a row of its own)."""
        return any(v is not None for v in (self.consumer, self.model, self.prompt_tokens, self.completion_tokens))


@dataclass(slots=True)
class Aim:
    """A body of only ``{"instance": ...}``: a moment of activity for that member of a fleet."""

    instance: str
    model: None = None


class BadReport(Exception):
    """A body that is not valid JSON (400) or has bad fields (422); the message says which."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_report(body: bytes) -> Report | Aim | None:
    """The body's report, None for no body (a moment of activity), ``Aim`` for a moment of a named
    instance's (a fleet's), or ``BadReport``."""
    if not body or body.isspace():  # as `not body.strip()`, without its copy
        return None
    try:
        # JSON on the wire is UTF-8 (RFC 8259): decoding it here skips json.loads' guess of
        # the encoding and its wrappers, a third of the parse.
        data = _decode(body.decode())
    except ValueError:  # UnicodeDecodeError included
        raise BadReport(400, "the body is not valid JSON") from None
    except RecursionError:  # "[[[[..." thousands deep: the parser's stack, not a server error
        raise BadReport(400, "the body is not valid JSON (nested too deeply)") from None
    if type(data) is not dict:
        raise BadReport(422, "body: expected a JSON object")
    if len(data) == 1 and "instance" in data:
        problems: list[str] = []
        aimed = _text(data, "instance", problems, most=MAX_INSTANCE_CHARS)
        if aimed is None:
            raise BadReport(422, "; ".join(problems) or f"instance: a string of 1 to {MAX_INSTANCE_CHARS} characters")
        return Aim(aimed)
    request_id, phase = data.get("request_id"), data.get("phase")
    # The common case first, checked cheaply: known fields, an id and a phase, nothing else or good values.
    # A JSON escape (\u) may spell a lone surrogate, which no UTF-8 ledger or answer can hold: such
    # a body takes the slow path, where every string is checked.
    if (
        b"\\u" not in body
        and FIELDS.issuperset(data)
        and type(request_id) is str
        and 0 < len(request_id) <= MAX_ID_CHARS
        and phase in PHASES
    ):
        if len(data) == 2:
            return Report(request_id, phase)
        # An end's figures, each absent, null or good (no \u: every string is UTF-8 text already,
        # so _text's check for a lone surrogate has nothing to find): what the checks below return.
        consumer, model = data.get("consumer"), data.get("model")
        prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
        instance = data.get("instance")
        if (
            (consumer is None or (type(consumer) is str and 0 < len(consumer) <= MAX_ID_CHARS))
            and (model is None or (type(model) is str and 0 < len(model) <= MAX_ID_CHARS))
            and (prompt is None or (type(prompt) is int and 0 <= prompt <= MAX_TOKENS))
            and (completion is None or (type(completion) is int and 0 <= completion <= MAX_TOKENS))
            and (instance is None or (type(instance) is str and 0 < len(instance) <= MAX_INSTANCE_CHARS))
        ):
            return Report(request_id, phase, consumer, model, prompt, completion, instance)
        problems = []  # one of them is not: the checks say which
    else:
        problems = [f"{printable(name)}: unknown field" for name in data if name not in FIELDS]
        request_id = _text(data, "request_id", problems, required=True)
        if phase not in PHASES:
            problems.append("phase: required, 'start' or 'end'")
    consumer, model = _text(data, "consumer", problems), _text(data, "model", problems)
    prompt, completion = _count(data, "prompt_tokens", problems), _count(data, "completion_tokens", problems)
    instance = _text(data, "instance", problems, most=MAX_INSTANCE_CHARS)
    if problems:
        raise BadReport(422, "; ".join(problems))
    assert isinstance(request_id, str) and isinstance(phase, str)
    return Report(request_id, phase, consumer, model, prompt, completion, instance)


def _text(data: dict[str, object], name: str, problems: list[str], *, required: bool = False, most: int = MAX_ID_CHARS) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            problems.append(f"{name}: required, a string of 1 to {most} characters")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= most:
        problems.append(f"{name}: a string of 1 to {most} characters")
        return None
    if not encodable(value):
        problems.append(f"{name}: not valid Unicode text (a lone surrogate, as \\ud800)")
        return None
    return value


def encodable(text: str) -> bool:
    """Whether ``text`` can be stored and sent as UTF-8 (JSON's \\ud800 decodes to a lone surrogate, which cannot)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str, limit: int = 60) -> str:
    """``text`` as an error message may quote it: UTF-8-safe (a lone surrogate escaped) and short."""
    safe = text if encodable(text) else text.encode("utf-8", "backslashreplace").decode()
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def _count(data: dict[str, object], name: str, problems: list[str]) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    # JSON Schema's integer is any number without a fraction (5.0 is 5); true is not a number.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        problems.append(f"{name}: a whole number from 0 to {MAX_TOKENS}")
        return None
    return value


class InFlight:
    """The requests in flight, the ids recently ended, and the rows the next flush writes."""

    def __init__(self, ttl_s: float):
        self.ttl = timedelta(seconds=ttl_s)
        # request_id -> (started_at, session_id), oldest first: the clock only moves on,
        # so the insertion order is the order of the starts and the newest is the last.
        self._open: dict[str, tuple[datetime, int | None]] = {}
        # request_id -> (started_at, session_id, expired), oldest first, at most MAX_ENDED
        self._ended: dict[str, tuple[datetime, int | None, bool]] = {}
        self._pending: dict[str, RequestReport] = {}  # request_id -> its row's new values
        self._newest: datetime | None = None  # the newest start in flight
        self._expired_until: datetime | None = None  # the latest TTL expiry
        self.count = 0  # requests in flight (expired ones go at the next sweep)
        self.dropped = 0  # rows dropped while the ledger failed (logged by the watchdog)

    @property
    def until(self) -> datetime | None:
        """The latest moment a request holds the instance awake (its end if it never ends), or None."""
        held = self._newest + self.ttl if self._newest is not None else None
        if held is None or (self._expired_until is not None and self._expired_until > held):
            return self._expired_until
        return held

    def note(self, report: Report, now: datetime, session_id: int | None) -> None:
        if self._open:  # else nothing can expire (and _newest is None, count 0 already)
            self.expire(now)
        if report.phase == "start":
            self._start(report, now, session_id)
        else:
            self._end(report, now, session_id)
        self.count = len(self._open)

    def _start(self, report: Report, now: datetime, session_id: int | None) -> None:
        rid = report.request_id
        if rid in self._open or rid in self._ended:
            return  # a repeated start, or one that arrived after its end: it holds nothing more
        self._open[rid] = (now, session_id)
        if self._newest is None or now > self._newest:
            self._newest = now
        self._put(_row(rid, report, session_id, started_at=now))
        if len(self._open) > MAX_OPEN:  # given up at once: ended now, by the TTL's rule
            oldest = next(iter(self._open))
            started, sid = self._open.pop(oldest)
            self._remember(oldest, (started, sid, True))
            self._merge(oldest, {"ended_at": now, "expired": 1})

    def _end(self, report: Report, now: datetime, session_id: int | None) -> None:
        rid = report.request_id
        opened = self._open.pop(rid, None)
        if opened is not None:
            started, sid = opened
            self._newest = self._open[next(reversed(self._open))][0] if self._open else None
            self._remember(rid, (started, sid, False))
            self._put(_row(rid, report, sid, started_at=started, ended_at=now))
            return
        seen = self._ended.get(rid)
        if seen is not None:
            started, sid, expired = seen
            if expired:  # the end after its TTL ran out: its real end and figures
                self._remember(rid, (started, sid, False))
                self._put(_row(rid, report, sid, started_at=started, ended_at=now))
            return  # else a repeated end: it counts once
        # An end without a start seen (sent before the watchdog restarted, or reordered):
        # a moment of activity (the caller noted it), and a row with zero busy time if it
        # says anything worth keeping.
        self._remember(rid, (now, session_id, False))
        if report.carries_more:
            self._put(_row(rid, report, session_id, started_at=now, ended_at=now))

    def expire(self, now: datetime) -> None:
        """Requests whose end did not come within the TTL end at start + TTL (``expired``)."""
        while self._open:
            rid = next(iter(self._open))
            started, sid = self._open[rid]
            ends = started + self.ttl
            if ends > now:
                break
            del self._open[rid]
            self._remember(rid, (started, sid, True))
            self._merge(rid, {"ended_at": ends, "expired": 1})
            if self._expired_until is None or ends > self._expired_until:
                self._expired_until = ends
        if not self._open:
            self._newest = None
        self.count = len(self._open)

    def release_stale(self, now: datetime, margin: timedelta) -> int:
        """End now (``expired``) the requests started more than ``margin`` ago: vLLM itself has been idle that
        long (the instance's agent says so), so their ends were lost; how many. Later starts stay."""
        stale = [rid for rid, (started, _) in self._open.items() if started <= now - margin]
        for rid in stale:
            started, sid = self._open.pop(rid)
            self._remember(rid, (started, sid, True))
            self._merge(rid, {"ended_at": now, "expired": 1})
        if stale:
            self._newest = self._open[next(reversed(self._open))][0] if self._open else None
            # Idle counts from the release, as from an end: the hold must not fall back into the past.
            if self._expired_until is None or now > self._expired_until:
                self._expired_until = now
        self.count = len(self._open)
        return len(stale)

    def _remember(self, rid: str, seen: tuple[datetime, int | None, bool]) -> None:
        self._ended.pop(rid, None)  # re-inserted: newest last
        self._ended[rid] = seen
        if len(self._ended) > MAX_ENDED:
            del self._ended[next(iter(self._ended))]

    def _merge(self, rid: str, values: RequestReport) -> None:
        row = self._pending.get(rid)
        if row is None:
            self._pending[rid] = {"request_id": rid, **values}
        else:
            row.update(cast(RequestReport, {k: v for k, v in values.items() if v is not None}))

    def _put(self, row: RequestReport) -> None:
        """``_merge`` of a whole row (``_row``: its id first), kept as it is when its id has none pending."""
        rid = row["request_id"]
        pending = self._pending.get(rid)
        if pending is None:
            self._pending[rid] = row
        else:
            fields = cast("dict[str, object]", pending)  # the same dict, filled field by field
            for name, value in row.items():
                if value is not None:
                    fields[name] = value

    # -- the flush (vastops/watchdog/engine.py) --------------------------------------------------

    def take(self) -> list[RequestReport]:
        """The rows changed since the last take, for one write; ``put_back`` if it fails."""
        rows, self._pending = list(self._pending.values()), {}
        return rows

    def put_back(self, rows: list[RequestReport]) -> None:
        """Rows a failed write did not store: kept (newer values win) for the next flush."""
        newer, self._pending = self._pending, {}
        for row in rows:
            self._pending[row["request_id"]] = row.copy()
        for rid, values in newer.items():
            self._merge(rid, values)
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]
            self.dropped += 1

    def restore(self, open_rows: list[OpenRequest], expired_until: datetime | None) -> None:
        """What the ledger holds from before this process: the requests still in flight and the latest expiry."""
        for row in open_rows:
            started = row["started_at"]
            if row["request_id"] not in self._open and row["request_id"] not in self._ended and started is not None:
                self._open[row["request_id"]] = (started, row.get("session_id"))
        self._open = dict(sorted(self._open.items(), key=lambda item: item[1][0]))
        self._newest = self._open[next(reversed(self._open))][0] if self._open else None
        if expired_until is not None and (self._expired_until is None or expired_until > self._expired_until):
            self._expired_until = expired_until
        self.count = len(self._open)


def _row(rid: str, report: Report, session_id: int | None, *, started_at: datetime, ended_at: datetime | None = None) -> RequestReport:
    return {
        "request_id": rid,
        "session_id": session_id,
        "started_at": started_at,
        "ended_at": ended_at,
        "consumer": report.consumer,
        "model": report.model,
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "expired": 0,
    }
