"""vast's status fields -> the contract's word, every combination, against a table written out here.

The table is the module docstring of vastops/vast.py read row by row, not the rule
called again: a change to ``map_status`` that moves any cell shows here. ``frozen``
counts as running (it is billed).
"""

from __future__ import annotations

import pytest

from vastops.vast import map_status, parse_instance

INTENDED = ("running", "stopped", "frozen", None)
CUR_STATES = ("running", "stopped", None)
MESSAGES = (None, "OCI runtime create failed")
# R running, S stopped, X exited, L loading, Q scheduling, C creating.
# Columns: cur_state running / stopped / missing, each with no status_msg | an error in it.
ASKED_TO_RUN = """
actual      running  stopped  missing
None        C C      Q Q      C C
created     L L      L L      L L
loading     L L      L L      L L
running     R R      R R      R R
stopped     X X      Q Q      Q X
frozen      R R      R R      R R
exited      X X      Q Q      Q X
rebooting   L L      L L      L L
restarting  L L      L L      L L
unknown     X X      X X      X X
offline     X X      X X      X X
"""
ASKED_TO_STOP = """
actual      running  stopped  missing
None        S S      S S      S S
created     S S      S S      S S
loading     S S      S S      S S
running     S S      S S      S S
stopped     S S      S S      S S
frozen      S S      S S      S S
exited      S S      S S      S S
rebooting   S S      S S      S S
restarting  S S      S S      S S
unknown     X X      X X      X X
offline     X X      X X      X X
"""
WORDS = {"R": "running", "S": "stopped", "X": "exited", "L": "loading", "Q": "scheduling", "C": "creating"}
# running, frozen and a missing intended_status all mean "asked to run".
TABLES = {"running": ASKED_TO_RUN, "frozen": ASKED_TO_RUN, None: ASKED_TO_RUN, "stopped": ASKED_TO_STOP}


def _cases():
    for intended in INTENDED:
        for line in TABLES[intended].strip().splitlines()[1:]:
            actual, *cells = line.split()
            assert len(cells) == len(CUR_STATES) * len(MESSAGES)
            for i, cell in enumerate(cells):
                cur, msg = CUR_STATES[i // 2], MESSAGES[i % 2]
                yield intended, None if actual == "None" else actual, cur, msg, WORDS[cell]


CASES = list(_cases())


def test_the_table_covers_every_combination():
    seen = {(i, a, c, m) for i, a, c, m, _ in CASES}
    assert len(seen) == len(CASES) == 4 * 11 * 3 * 2


@pytest.mark.parametrize(("intended", "actual", "cur_state", "status_msg", "expected"), CASES)
def test_status_word(intended, actual, cur_state, status_msg, expected):
    assert map_status(intended, actual, status_msg, cur_state) == expected


def test_a_row_is_read_with_its_cur_state():
    """parse_instance passes cur_state on: the same row reads scheduling or exited by it alone."""
    row = {"id": 1, "intended_status": "running", "actual_status": "exited", "status_msg": "", "ports": {}}
    assert parse_instance({**row, "cur_state": "stopped"}).status == "scheduling"
    assert parse_instance({**row, "cur_state": "running"}).status == "exited"
