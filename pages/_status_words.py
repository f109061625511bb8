"""The Status page's words for the last action and the guardrails: pure (no ``st.*``), testable without AppTest.

What the last action was (from the audit trail), who did it (the person and where from,
in ``vocabulary.by_words``), when and how it ended;
the stop causes, a stop's time and a keepalive's result in the page's words. Text from
elsewhere (an error, a reason) is escaped: Markdown, colour directives and LaTeX are
shown as they are. Times are written in the time zone passed in (``VASTOPS_TIMEZONE``).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from pages._common import ago, at_time, minutes, seconds_since, time_left, usd
from vastops import words
from vastops.control.status import KeepaliveResult
from vastops.vocabulary import CAUSE_WORDS, STOP_CAUSES, Cause, Event, Status, by_words
from vastops.vocabulary import stopped_by as stopped_by_words

# The status word's colour: green while it runs (and bills), blue on the way up, orange
# when it needs a look, red when it cannot be managed, grey when nothing runs.
STATUS_COLOURS: dict[str, str] = {
    Status.RUNNING: "green",
    Status.SCHEDULING: "blue",
    Status.LOADING: "blue",
    Status.CREATING: "blue",
    Status.EXITED: "orange",
    Status.UNCONFIGURED: "red",
    Status.NOT_FOUND: "red",
    Status.STOPPED: "gray",
    Status.UNKNOWN: "gray",
}


def md(text: object) -> str:
    """Text from elsewhere (an error, a reason) shown as it is: no Markdown, no colour directive, no LaTeX."""
    return "".join("\\" + ch if ch in "\\`*_[]<>#|:$~" else ch for ch in str(text))


def sentence(text: object) -> str:
    """Text from elsewhere as a sentence of ours: escaped, and ending in a full stop."""
    text = str(text).strip()
    return md(text if text.endswith((".", "!", "?")) else text + ".")


def money(amount: float | None) -> str:
    return usd(amount).replace("$", "\\$")  # a $ pair would be read as LaTeX


def money_rate(usd_per_hour: float | None) -> str:
    return words.rate(usd_per_hour).replace("$", "\\$")


def when_at(ts: str | None, now: datetime, tz: tzinfo) -> str:
    return f"at {at_time(ts, tz, now)}, {ago(seconds_since(ts, now))}"


def by_whom(a: dict) -> str:
    """Who did it, in words: 'by alice from the dashboard', 'from the CLI' (the vocabulary's words, one place)."""
    person = a.get("person")
    return md(by_words(a["actor"], str(person) if person else None))  # a name is shown as it is, never as Markdown


def idle(minutes_idle: float | None) -> str:
    if minutes_idle is None:
        return "idle"
    if minutes_idle >= 1 and minutes_idle == int(minutes_idle):
        return f"{int(minutes_idle)} idle minute{'s' if minutes_idle != 1 else ''}"
    return f"{minutes(minutes_idle)} without a request"


def session_figures(meta: dict) -> str:
    if meta.get("session_runtime_minutes") is not None:
        return f"; the session ran {minutes(meta['session_runtime_minutes'])} and cost {money(meta.get('session_cost_usd'))}"
    return "; no session was running" if meta.get("already_stopped") else ""


def stopped_by(cause: str | None, meta: dict) -> str:
    """Who stopped it, in words with the cause's figures: 'auto-shutdown after 30 idle minutes'.

    The words are the vocabulary's (``STOP_CAUSES``); this adds the figures of the stop's row.
    """
    try:
        s = STOP_CAUSES[Cause(cause or "")]
    except ValueError:
        return stopped_by_words(cause)  # "the watchdog"
    setting = f" ({s.setting})" if s.setting else ""
    if s.held_by_requests:
        inactive = idle(meta.get("idle_minutes") or meta.get("inactive_minutes"))
        return f"{s.stopper} after {inactive}" if s.cause == Cause.IDLE else f"{s.stopper} ({inactive})"
    if s.cause == Cause.MAX_SESSION:
        limit = meta.get("limit_hours")
        return f"{s.stopper} of {minutes(limit * 60) if limit else '—'}{setting}"
    if s.cause == Cause.DAILY_STOP:
        return f"{s.stopper} at {meta.get('stop_at') or '—'} {meta.get('timezone') or ''}{setting}".replace("  ", " ")
    # a budget: which one, and its figures
    return f"the {meta.get('budget') or ''} budget: {money(meta.get('spent_usd'))} of {money(meta.get('limit_usd'))} spent".replace(
        "  ", " "
    )


def start_words(a: dict, outcome: dict | None, now: datetime, pending: bool, tz: tzinfo) -> tuple[str, str]:
    """(tone, words) of a start or reboot and how it ended."""
    reboot = a["event"] == Event.REBOOT_REQUESTED
    noun, done = ("Reboot", "Rebooted") if reboot else ("Start", "Started")
    who = f"{by_whom(a)} {when_at(a['ts'], now, tz)}"
    if outcome is None:
        return ("info", f"{noun} requested {who}: in progress.") if pending else ("info", f"{noun} requested {who}.")
    event, meta = outcome["event"], outcome["meta"]
    if event in (Event.POWER_ON_COMPLETE, Event.REBOOT_COMPLETE):
        return "ok", f"{done} {who}: healthy after {minutes((meta.get('startup_seconds') or 0) / 60)}."
    if event in (Event.POWER_ON_FAILED, Event.REBOOT_FAILED):
        return "failed", f"{noun} {who} failed: {sentence(meta.get('error') or meta.get('kind') or 'vast.ai refused it')}"
    if event == Event.POWER_ON_HEALTH_TIMEOUT:
        why = f" ({md(meta['reason'])})" if meta.get("reason") else ""
        waited = minutes((meta.get("waited_seconds") or 0) / 60)
        return (
            "failed",
            f"{noun} {who} gave up: /health did not answer within {waited}{why}; it bills until it is stopped or auto-shutdown stops it.",
        )
    if event == Event.POWER_ON_UNAVAILABLE:
        waited = minutes((meta.get("waited_seconds") or 0) / 60)
        return "failed", (
            f"**The last start was cancelled: the GPU on the instance's host is taken.** Requested {who}, it waited {waited} "
            "for it (VAST_SCHEDULING_TIMEOUT_S). Start again later, or move the instance to another machine in vast.ai's console."
        )
    return "warning", f"{noun} {who} was cancelled: the instance was stopped before /health answered."


def last_action_words(a: dict, now: datetime, pending: bool, tz: tzinfo) -> tuple[str, str]:
    """(tone, words) of the last action: 'ok', 'info', 'warning' or 'failed', and one sentence or two."""
    event, meta, outcome = a["event"], a["meta"], a.get("outcome")
    if event in (Event.POWER_ON_REQUESTED, Event.REBOOT_REQUESTED):
        return start_words(a, outcome, now, pending, tz)
    if event == Event.POWER_OFF_REQUESTED:
        who = by_whom(a)
        if outcome is None:
            return "info", f"Stop requested {who} {when_at(a['ts'], now, tz)}."
        if outcome["event"] == Event.POWER_OFF_FAILED:
            return "failed", (
                f"Stop {who} {when_at(a['ts'], now, tz)} failed: {sentence(outcome['meta'].get('error') or 'vast.ai refused it')} "
                "It may still run, and bill."
            )
        return "ok", f"Stopped {who} {when_at(outcome['ts'], now, tz)}{session_figures(outcome['meta'])}."
    if event == Event.KEEPALIVE:
        until = at_time(meta.get("until"), tz, now)
        return "info", (
            f"Kept running {by_whom(a)} {when_at(a['ts'], now, tz)}: the idle stop no earlier than {until} "
            f"({minutes(meta.get('minutes'))}), for “{md(meta.get('reason') or '')}”."
        )
    if event == Event.EXTERNAL_START:
        return "info", f"Started outside vastops (vast.ai's console or another client), seen {when_at(a['ts'], now, tz)}."
    if event == Event.EXTERNAL_STOP:
        return (
            "info",
            f"Stopped outside vastops (vast.ai's console or another client), seen {when_at(a['ts'], now, tz)}{session_figures(meta)}.",
        )
    if event == Event.AGENT_STOP:
        away = meta.get("unreachable_minutes")
        return (
            "failed",
            f"Stopped by the instance itself {when_at(a['ts'], now, tz)}: the watchdog was unreachable"
            f"{f' for {minutes(away)}' if isinstance(away, int | float) else ''} and its lease lapsed{session_figures(meta)}.",
        )
    if event == Event.CONTRACT_END_STOP:
        return "failed", (
            f"Stopped by vast.ai: the rental contract reached its end date, seen {when_at(a['ts'], now, tz)}{session_figures(meta)}. "
            "It cannot be started again; rent a new instance."
        )
    if event == Event.CREDIT_EXHAUSTED_STOP:
        return "failed", f"Stopped by vast.ai: the account's credit ran out, seen {when_at(a['ts'], now, tz)}{session_figures(meta)}."
    # a stop the watchdog decided (auto_shutdown, max_session_stop, scheduled_stop, budget_stop)
    by = stopped_by(meta.get("cause"), meta)
    if outcome is None:
        return "info", f"Stopping: {by}, decided {when_at(a['ts'], now, tz)}."
    if outcome["event"] == Event.POWER_OFF_FAILED:
        return "failed", (
            f"Stop by {by} decided {when_at(a['ts'], now, tz)}, but vast.ai did not stop it: "
            f"{sentence(outcome['meta'].get('error') or 'the call failed')} The watchdog retries until it stops."
        )
    return "ok", f"Stopped by {by} {when_at(outcome['ts'], now, tz)}{session_figures(outcome['meta'])}."


def cause_words(cause: str | None, budget: str | None = None) -> str:
    if cause == Cause.BUDGET and budget:
        return f"the {budget} budget is spent"
    return CAUSE_WORDS.get(cause or "", cause or "—")


def why_not_moved(cause: str) -> str:
    if cause == Cause.BUDGET:
        return "A keepalive does not move it: the budget's stop comes when it is spent, whatever the activity."
    return f"A keepalive does not move it: it is {cause_words(cause)}, whatever the activity."


def stop_phrase(at: str, now: datetime, tz: tzinfo) -> str:
    left = -(seconds_since(at, now) or 0.0)
    when = f"in {time_left(left)}" if left > 0 else "now"
    return f"{when} ({at_time(at, tz, now)})"


def kept_words(result: KeepaliveResult, tz: tzinfo) -> str:
    text = f"Kept running until at least {at_time(result['keepalive_until'], tz)}."
    if result.get("next_stop_at"):
        left = -(seconds_since(result["next_stop_at"]) or 0.0)
        text += f" Next stop in {time_left(left)} ({at_time(result['next_stop_at'], tz)}): {cause_words(result['next_stop_cause'])}."
    return text


# -- money: what can still bill, and what bills without a session (StatusAnswer's money fields) --


def in_or_ago(ts: str | None, now: datetime) -> str:
    """'in 2 d 4 h', '3 h ago', or '' when there is no time."""
    since = seconds_since(ts, now)
    if since is None:
        return ""
    return f"in {words.duration(-since)}" if since < 0 else words.ago(since)


def forgotten_words(forgotten_usd: float, next_stop_at: str | None, now: datetime, tz: tzinfo) -> str:
    """While a session runs: the most it can still cost if nobody uses it again."""
    when = f" ({stop_phrase(next_stop_at, now, tz)})" if next_stop_at else ""
    return f"**If nobody uses it again:** at most {money(forgotten_usd)} more until its next stop{when}."


def stopped_disk_words(stopped: dict, now: datetime, tz: tzinfo) -> str:
    """While stopped: since when, what the disk has cost so far and costs a day and a month."""
    since = stopped.get("stopped_since")
    estimate = "" if stopped.get("rate_seen") else " (estimated at the running rate)"
    return (
        f"**The stopped disk still bills:** stopped since {at_time(since, tz, now)} ({words.ago(seconds_since(since, now))}), "
        f"{money(stopped.get('so_far_usd'))} so far; {money(stopped.get('per_day_usd'))} a day, "
        f"{money(stopped.get('per_month_usd'))} a month at {money_rate(stopped.get('storage_dph'))}"
        f"{estimate}. `vastops instance destroy` ends it (the disk and what is on it are lost for good)."
    )


def contract_words(contract_end: str, now: datetime, tz: tzinfo, notice_days: float) -> tuple[bool, str]:
    """(near, words) of the rental contract's end: near when it ends within ``notice_days`` (or has ended)."""
    left = -(seconds_since(contract_end, now) or 0.0)
    when = f"{at_time(contract_end, tz, now)} ({in_or_ago(contract_end, now)})"
    if left <= 0:
        return True, f"**The rental contract ended** {when}: vast.ai stops the instance, and it cannot be started again."
    if left <= notice_days * 86400:
        return True, f"**The rental contract ends soon:** {when}. vast.ai stops the instance then; rent a new one before it."
    return False, f"Rental contract ends {when}: vast.ai stops the instance then."


def price_rise_words(rise: dict, now: datetime, tz: tzinfo) -> str:
    """A host's pending price increase: what changes and from when."""
    applies = rise.get("applies_at")
    when = f"from {at_time(applies, tz, now)} ({in_or_ago(applies, now)})" if applies else "from the contract's end"
    return (
        f"**The host raises its price:** {md(rise.get('change') or 'a rate rises')}, {when}. "
        "Stop using it before then, or rent another instance, if the new price is too high."
    )
