"""Audit: every action and what came of it, newest first, with filters, paging and CSV.

Paging is keyset paging on the row id (``vastops.reports.audit_page``), so the
100th page of a million-row log is as quick as the first.
"""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import streamlit as st

from pages._common import ledger, require_login, settings
from vastops import reports
from vastops.vocabulary import AUDIT_ACTORS, Event

CACHE_TTL_S = 10
PAGE_SIZES = [50, 100, 200]
CURSOR = "audit_cursor"  # None (newest), ("older", id) or ("newer", id)
FILTER_SIG = "audit_filter_sig"

require_login()
cfg = settings()
LEDGER = ledger(cfg)
DB = str(LEDGER.path)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_page(db_path: str, flt: reports.AuditFilter, cursor: tuple | None, limit: int) -> reports.AuditPage:
    with LEDGER.read() as db:
        if cursor is None:
            return reports.audit_page(db, flt, limit=limit)
        direction, row_id = cursor
        if direction == "older":
            return reports.audit_page(db, flt, older_than=row_id, limit=limit)
        return reports.audit_page(db, flt, newer_than=row_id, limit=limit)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def count_rows(db_path: str, flt: reports.AuditFilter) -> int:
    with LEDGER.read() as db:
        return reports.audit_count(db, flt)


def csv_data(led, flt: reports.AuditFilter) -> str:
    # Deferred: runs only when the download is clicked, in another thread, on its own connection.
    with led.read() as db:
        return reports.audit_csv(db, flt)


def reset_paging() -> None:
    st.session_state[CURSOR] = None


def go(cursor: tuple | None) -> None:
    st.session_state[CURSOR] = cursor


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Time (UTC)": pd.to_datetime([r["ts"] for r in rows], utc=True),
            "Event": [r["event"] for r in rows],
            "Actor": [r["actor"] for r in rows],
            "Instance": [r["instance_id"] for r in rows],
            "Details": [json.dumps(r["meta"], sort_keys=True, separators=(", ", ": ")) for r in rows],
            "#": [r["id"] for r in rows],
        }
    )


st.title("Audit")
f1, f2, f3, f4 = st.columns([3, 2, 2, 3])
events = f1.multiselect("Event type", list(Event), key="audit_events", placeholder="all events", on_change=reset_paging)
actors = f2.multiselect("Actor", list(AUDIT_ACTORS), key="audit_actors", placeholder="all actors", on_change=reset_paging)
days = f3.date_input(
    "Dates (UTC)", value=[], key="audit_days", on_change=reset_paging, help="Pick a first and a last day; leave empty for all."
)
text = f4.text_input(
    "Search in details",
    key="audit_text",
    placeholder="e.g. 12345, rate_limited, health",
    on_change=reset_paging,
    help="Finds rows whose details (the meta JSON) contain this text; not case-sensitive.",
)

start = end = None
if isinstance(days, (tuple, list)) and days:
    start, end = days[0], days[-1]
elif isinstance(days, date):
    start = end = days
flt = reports.AuditFilter(events=tuple(events), actors=tuple(actors), start=start, end=end, text=text.strip())

# A changed filter starts again at the newest rows.
sig = repr(flt)
if st.session_state.get(FILTER_SIG) != sig:
    st.session_state[FILTER_SIG] = sig
    st.session_state[CURSOR] = None

size = st.session_state.get("audit_page_size", PAGE_SIZES[0])
page = load_page(DB, flt, st.session_state.get(CURSOR), size)
total = count_rows(DB, flt)

if page.rows:
    st.dataframe(
        frame(page.rows),
        hide_index=True,
        column_config={
            "Time (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "Details": st.column_config.TextColumn(width="large"),
            "Instance": st.column_config.NumberColumn(format="%d"),
            "#": st.column_config.NumberColumn(format="%d", help="row id in the ledger"),
        },
        key="audit_table",
    )
else:
    st.info("No audit rows match these filters." if total == 0 else "No rows on this page.")

p1, p2, p3, info, p4 = st.columns([1, 1, 1, 3, 1])
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
p4.selectbox("Rows per page", PAGE_SIZES, key="audit_page_size", label_visibility="collapsed", on_change=reset_paging)

st.download_button(
    f"Matching rows (CSV, {total:,} rows)",
    data=lambda: csv_data(LEDGER, flt),
    file_name="vastops-audit.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
    key="audit_csv",
    disabled=total == 0,
    help="Every row that matches the filters, newest first; meta as JSON text.",
)
st.caption(f"Newest first. Figures cached for {CACHE_TTL_S} s; actions on the Status page show here at once.")
