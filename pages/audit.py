"""Audit: every action and what came of it, newest first, with filters, paging and CSV.

Paging is keyset paging on the row id (``vastops.reports.audit.audit_page``), so the
100th page of a million-row log is as quick as the first. Events are shown in words
(``vastops.vocabulary.event_words``) and details as "key: value" in words
(``pages/_charts.details``), in a static table that wraps them instead of cutting
them off (``pages/_charts.table_html``); the CSV keeps the raw event names and the meta JSON.
Each row names its person where one is known (the account, e-mail, key or login user behind
the actor), and the trail filters by person as it does by actor. With a fleet, by instance too (all, or one:
its rows, and none of the others' or of no instance, such as a login).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import streamlit as st

from pages import _charts as charts
from pages import _reads as reads
from pages._common import ledger, require_login, settings
from pages._instances import fleet, scope_picker
from vastops.reports import audit as reports
from vastops.vocabulary import AUDIT_ACTORS, Event

CACHE_TTL_S = 10
PAGE_SIZES = [50, 100, 200]
CURSOR = "audit_cursor"  # None (newest), ("older", id) or ("newer", id)
FILTER_SIG = "audit_filter_sig"

require_login()
cfg = settings()
LEDGER = ledger(cfg)
DB = str(LEDGER.path)


@reads.changed_by(reads.AUDIT)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_page(db_path: str, flt: reports.AuditFilter, cursor: tuple | None, limit: int) -> reports.AuditPage:
    # db_path keys the cache; LEDGER is the same file.
    if cursor is None:
        return reports.audit_page(LEDGER, flt, limit=limit)
    direction, row_id = cursor
    if direction == "older":
        return reports.audit_page(LEDGER, flt, older_than=row_id, limit=limit)
    return reports.audit_page(LEDGER, flt, newer_than=row_id, limit=limit)


@reads.changed_by(reads.AUDIT)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def count_rows(db_path: str, flt: reports.AuditFilter) -> int:
    return reports.audit_count(LEDGER, flt)


@reads.changed_by(reads.AUDIT)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def first_day(db_path: str) -> date | None:
    return reports.first_day(LEDGER)


@reads.changed_by(reads.AUDIT)
@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def persons(db_path: str) -> list[str]:
    return reports.persons(LEDGER)


def csv_data(led, flt: reports.AuditFilter) -> str:
    # Deferred: runs only when the download is clicked, in another thread, on its own connection.
    return reports.audit_csv(led, flt)


def reset_paging() -> None:
    st.session_state[CURSOR] = None


def go(cursor: tuple | None) -> None:
    st.session_state[CURSOR] = cursor


COLUMNS = ["Time (UTC)", "Event", "Actor", "Person", "Instance", "Details", "Row"]


def table(rows: list[reports.AuditRow]) -> str:
    cells = [
        [
            r["ts"][:19].replace("T", " "),
            charts.event_label(r["event"]),
            r["actor"],
            r["person"] or "—",
            NAMES.get(r["instance_id"], str(r["instance_id"])) if r["instance_id"] is not None else "—",
            charts.details(r["meta"]),
            str(r["id"]),
        ]
        for r in rows
    ]
    # The short columns never wrap ("syst em"); the event's words get room for two lines at most.
    return charts.table_html(COLUMNS, cells, "audit", nowrap=("Time (UTC)", "Actor", "Instance", "Row"), min_width={"Event": "10rem"})


st.title("Audit")
FLEET = fleet()
NAMES = {m.instance_id: m.label for m in FLEET.members} if FLEET.is_fleet else {}  # in a fleet, each row's instance by name
# One instance: no picker, and every row as before (logins and the like belong to no instance).
picked = scope_picker("Instance", "audit_instance", "All instances", on_change=reset_paging) if FLEET.is_fleet else None
today = datetime.now(UTC).date()
oldest = first_day(DB)
f1, f2, f3 = st.columns([3, 2, 2])
events = f1.multiselect(
    "Event type",
    list(Event),
    key="audit_events",
    placeholder="all events",
    on_change=reset_paging,
    format_func=charts.event_label,
    wrap=True,
)
actors = f2.multiselect("Actor", list(AUDIT_ACTORS), key="audit_actors", placeholder="all actors", on_change=reset_paging, wrap=True)
named = f3.multiselect(
    "Person",
    persons(DB),
    key="audit_persons",
    placeholder="anyone",
    on_change=reset_paging,
    wrap=True,
    help="Who acted: a dashboard account or e-mail, an API key's name, the CLI's login user.",
)
g1, g2, g3 = st.columns([2, 3, 1])
days = g1.date_input(
    "Dates (UTC)",
    value=[],
    min_value=min(oldest, today) if oldest else None,
    max_value=today,
    key="audit_days",
    on_change=reset_paging,
    help="Pick a first and a last day (UTC, both included); leave empty for all.",
)
text = g2.text_input(
    "Search in details",
    key="audit_text",
    placeholder="e.g. 12345, rate_limited, health",
    on_change=reset_paging,
    help="Finds rows whose details (the meta JSON) contain this text; not case-sensitive.",
)
g3.selectbox("Rows per page", PAGE_SIZES, key="audit_page_size", on_change=reset_paging)

start = end = None
if isinstance(days, (tuple, list)) and days:
    start, end = days[0], days[-1]
elif isinstance(days, date):
    start = end = days
flt = reports.AuditFilter(
    events=tuple(events),
    actors=tuple(actors),
    persons=tuple(named),
    start=start,
    end=end,
    text=text.strip(),
    instance_id=picked.instance_id if picked is not None else None,
)

# A changed filter starts again at the newest rows.
sig = repr(flt)
if st.session_state.get(FILTER_SIG) != sig:
    st.session_state[FILTER_SIG] = sig
    st.session_state[CURSOR] = None

size = st.session_state.get("audit_page_size", PAGE_SIZES[0])
page = load_page(DB, flt, st.session_state.get(CURSOR), size)
total = count_rows(DB, flt)

if page.rows:
    # A static HTML table: every cell whole, long details wrapped (a data grid cuts them off).
    st.html(charts.TABLE_STYLE + table(page.rows))
else:
    st.info("No audit rows match these filters." if total == 0 else "No rows on this page.")

p1, p2, p3, info = st.columns([1, 1, 1, 4])
p1.button(
    "Newest", key="audit_newest", icon=":material/first_page:", disabled=not page.has_newer, on_click=go, args=(None,), width="stretch"
)
p2.button(
    "Newer",
    key="audit_newer",
    icon=":material/chevron_left:",
    disabled=not page.has_newer,
    on_click=go,
    args=(("newer", page.first_id),),
    width="stretch",
)
p3.button(
    "Older",
    key="audit_older",
    icon=":material/chevron_right:",
    icon_position="right",
    disabled=not page.has_older,
    on_click=go,
    args=(("older", page.last_id),),
    width="stretch",
)
info.markdown(
    f"**{total:,}** matching"
    + (f" · this page {page.rows[-1]['ts'][:16].replace('T', ' ')} – {page.rows[0]['ts'][:16].replace('T', ' ')}" if page.rows else "")
)

st.download_button(
    f"Matching rows (CSV, {total:,} rows)",
    data=lambda: csv_data(LEDGER, flt),
    file_name=charts.audit_csv_name(flt.start, flt.end, flt.events, flt.actors, flt.text, flt.persons),
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
    key="audit_csv",
    disabled=total == 0,
    help="Every row that matches the filters, newest first; the events' own names, the person, meta as JSON text (numbers rounded).",
)
st.caption(f"Newest first. Figures cached for {CACHE_TTL_S} s; actions on the Status page show here at once.")
