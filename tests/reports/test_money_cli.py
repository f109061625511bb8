"""``vastops reconcile`` and ``vastops report``: their text, their JSON, their exit codes, their CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest

from helpers import INSTANCE_ID, SIM_KEY
from vastops.cli import main
from vastops.clock import utcnow
from vastops.ledger.store import Ledger
from vastops.reports.commands import EXIT_FLAGGED
from vastops.reports.reconcile import reconcile


@pytest.fixture
def env_file(tmp_path):
    """A ledger with two days of one session each and vast's charges for them, and the env that names it."""
    ledger = Ledger(tmp_path / "ledger.db")
    today = utcnow().date()
    days = [today - timedelta(days=3), today - timedelta(days=2)]
    with ledger.write() as tx:
        for day in days:
            start = datetime(day.year, day.month, day.day, 10, tzinfo=UTC)
            sid = tx.start_session(INSTANCE_ID, start, "RTX 3090", 0.40, 0.02, "cli")
            tx.close_session(tx.open_session(INSTANCE_ID), start + timedelta(hours=2), "cli", "manual")
            assert sid
    path = tmp_path / "money.env"
    path.write_text(
        f"VAST_API_KEY={SIM_KEY}\nVAST_INSTANCE_ID={INSTANCE_ID}\nVAST_API_URL=http://127.0.0.1:9\nVASTOPS_DB={tmp_path / 'ledger.db'}\n",
        encoding="utf-8",
    )
    return path, ledger, days


def _charge(ledger, day: date, gpu: float) -> None:
    """vast's charges for ``day``: ``gpu`` and the disk as the ledger has it (rounded as vast rounds)."""
    with ledger.view() as view:
        (line,) = reconcile(view.db, INSTANCE_ID, day, day, utcnow())
    disk = next(k["estimated_usd"] for k in line["kinds"] if k["kind"] == "disk")
    with ledger.write() as tx:
        tx.store_charges(INSTANCE_ID, day, {"gpu": gpu, "disk": round(disk, 3)}, utcnow(), settled=True, note=None)


def test_reconcile_exits_0_when_every_day_agrees_and_10_when_one_differs(env_file, capsys):
    path, ledger, days = env_file
    for day in days:
        _charge(ledger, day, 0.80)  # 2 h at $0.40: what the ledger has
    assert main(["reconcile", "--days", "5", "--env-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "agrees" in out and "FLAGGED" not in out and "0 flagged" in out
    _charge(ledger, days[1], 0.95)  # vast billed more GPU time that day
    assert main(["reconcile", "--days", "5", "--env-file", str(path), "--json"]) == EXIT_FLAGGED
    answer = json.loads(capsys.readouterr().out)
    flagged = [d for d in answer["days"] if d["flagged"]]
    assert [d["day"] for d in flagged] == [days[1].isoformat()]
    assert flagged[0]["cause"].startswith("a rate change")
    assert answer["summary"]["days_flagged"] == 1


def test_reconcile_says_a_bad_since_in_one_line(env_file, capsys):
    path, _, _ = env_file
    with pytest.raises(SystemExit) as exit_:
        main(["reconcile", "--since", "yesterday", "--env-file", str(path)])
    assert exit_.value.code == 2
    assert "--since takes a day as YYYY-MM-DD" in capsys.readouterr().err


def test_report_prints_the_month_and_writes_a_csv_whose_parts_add_up(env_file, tmp_path, capsys):
    path, ledger, days = env_file
    for day in days:
        _charge(ledger, day, 0.80)
    month = days[1].strftime("%Y-%m")
    out_csv = tmp_path / "month.csv"
    assert main(["report", "--month", month, "--csv", str(out_csv), "--env-file", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"instance {INSTANCE_ID}, {month}" in text and "compute (GPU)" in text and f"wrote {out_csv}" in text
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    parts = [float(r["usd"]) for r in rows if r["section"] == "summary" and r["detail"] in ("gpu", "disk", "bwd", "bwu")]
    total = next(float(r["usd"]) for r in rows if r["section"] == "summary" and r["line"] == "total")
    assert round(sum(parts), 2) == total
    assert round(sum(float(r["usd"]) for r in rows if r["section"] == "day"), 2) == total


def test_report_refuses_a_bad_month(env_file, capsys):
    path, _, _ = env_file
    with pytest.raises(SystemExit):
        main(["report", "--month", "2026-13", "--env-file", str(path)])
    assert "--month takes YYYY-MM" in capsys.readouterr().err
