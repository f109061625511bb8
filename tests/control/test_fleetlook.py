"""A fleet's shared calls (vastops/control/fleetlook.py): one list call answers every member's show, never
an answer older than its question; the account's credit once for the fleet; state changes in turns, stops first."""

from __future__ import annotations

import threading
import time

import pytest

from helpers import SIM_KEY
from vastops.control.fleetlook import FleetLook, MemberClient, StateGate
from vastops.vast import ErrorKind, VastClient, VastError


class Lister:
    """A stand-in for vast's list call: counts calls, each answer stamped with the call's number."""

    def __init__(self, ids, fail: BaseException | None = None, hidden=(), odd=()):
        self.ids, self.fail, self.calls, self.began = ids, fail, 0, []
        self.hidden, self.odd, self.shows = set(hidden), set(odd), []  # left out of the list; rows that cannot be read
        self.lock = threading.Lock()

    def list_instances(self, ids, pause=None, bad=None):
        with self.lock:
            self.calls += 1
            number = self.calls
            self.began.append(time.monotonic())
        time.sleep(0.02)  # the call takes a moment: callers arriving meanwhile wait for the next
        if self.fail is not None:
            raise self.fail
        for i in self.odd:
            bad[i] = "ValueError: num_gpus"
        return {i: {"id": i, "call": number} for i in ids if i in self.ids and i not in self.hidden | self.odd}

    def show_instance(self, iid):
        self.shows.append(iid)
        if iid not in self.ids:
            raise VastError(ErrorKind.NOT_FOUND, f"vast.ai has no instance {iid}", 404)
        return {"id": iid, "call": "show"}

    def credit(self):
        with self.lock:
            self.calls += 1
        return 12.5


def test_many_members_share_list_calls_and_each_answer_began_after_its_question():
    lister = Lister([1, 2, 3])
    look = FleetLook(lister, [1, 2, 3], every_s=0.05)  # type: ignore[arg-type]
    answers: list[tuple[float, dict]] = []

    def member(iid: int) -> None:
        for _ in range(5):
            asked = time.monotonic()
            answers.append((asked, look.show(iid)))  # type: ignore[arg-type]

    threads = [threading.Thread(target=member, args=(i % 3 + 1,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 60 and lister.calls < 60 / 3, "questions that arrive together share one list call"
    for asked, answer in answers:
        assert lister.began[answer["call"] - 1] >= asked, "an answer from a call begun before the question"


def test_an_instance_not_listed_is_gone_only_once_a_show_says_so():
    lister = Lister([1, 3], hidden=[3])  # 3 exists, the list left it out
    look = FleetLook(lister, [1, 2, 3], every_s=0.01)  # type: ignore[arg-type]
    assert look.show(1)["id"] == 1 and lister.shows == []  # type: ignore[index]
    assert look.show(3)["call"] == "show"  # type: ignore[index]  # a show of its own found it
    with pytest.raises(VastError) as caught:
        look.show(2)
    assert caught.value.kind == ErrorKind.NOT_FOUND and lister.shows == [3, 2]
    with pytest.raises(VastError):
        look.show(2)
    assert lister.shows == [3, 2], "a confirmed absence is kept a while: no show per look for a typo"


@pytest.mark.parametrize("fail", [VastError(ErrorKind.UNAVAILABLE, "vast.ai answered 500"), ValueError("a row the parser chokes on")])
def test_a_failed_list_call_fails_its_waiters_and_never_says_gone(fail):
    failing = FleetLook(Lister([1, 2], fail=fail), [1, 2], every_s=0.01)  # type: ignore[arg-type]
    for iid in (1, 2):
        with pytest.raises(VastError) as caught:
            failing.show(iid)
        assert caught.value.kind == ErrorKind.UNAVAILABLE, "an unread list is no proof that anything is gone"
    assert failing.missing() == []  # nothing known: nothing named missing


def test_one_odd_row_fails_its_instance_only():
    look = FleetLook(Lister([1, 2], odd=[2]), [1, 2], every_s=0.01)  # type: ignore[arg-type]
    assert look.show(1)["id"] == 1  # type: ignore[index]
    with pytest.raises(VastError, match="row for instance 2 could not be read") as caught:
        look.show(2)
    assert caught.value.kind == ErrorKind.UNAVAILABLE


def test_the_accounts_credit_is_asked_once_for_the_fleet():
    lister = Lister([1, 2])
    look = FleetLook(lister, [1, 2])  # type: ignore[arg-type]
    members = [MemberClient(SIM_KEY, "http://127.0.0.1:9", look) for _ in range(5)]
    assert {m.credit() for m in members} == {12.5} and lister.calls == 1
    assert isinstance(members[0], VastClient)


def test_a_slow_account_call_holds_up_only_those_with_nothing_kept():
    release = threading.Event()
    calls: list[str] = []

    def slow() -> float:
        calls.append("asked")
        if len(calls) > 1:
            release.wait(5)
        return 7.0

    look = FleetLook(Lister([1]), [1])  # type: ignore[arg-type]
    assert look._account("credit", 0.0, slow) == 7.0  # kept, and stale at once (0 s fresh)
    asker = threading.Thread(target=look._account, args=("credit", 0.0, slow))
    asker.start()
    while len(calls) < 2:
        time.sleep(0.005)
    assert look._account("credit", 0.0, slow) == 7.0 and len(calls) == 2, "the last answer while one call is in flight"
    release.set()
    asker.join()


def test_a_waiting_stop_goes_before_every_waiting_start():
    gate = StateGate(every_s=0.2)
    order: list[str] = []
    gate.turn(stop=False)  # a start just went: the next turn is a while off

    def go(name: str, stop: bool) -> None:
        gate.turn(stop=stop)
        order.append(name)

    starts = [threading.Thread(target=go, args=(f"start{i}", False)) for i in range(3)]
    for t in starts:
        t.start()
    time.sleep(0.01)  # the starts wait first
    stop = threading.Thread(target=go, args=("stop", True))
    stop.start()
    for t in [*starts, stop]:
        t.join()
    assert order[0] == "stop" and sorted(order[1:]) == ["start0", "start1", "start2"]
