"""Slowing down password guessing at the dashboard's login.

One throttle per dashboard process (every browser session shares it, so opening
new sessions does not reset it): the first few wrong passwords are free, then each
further attempt must wait, doubling from 1 s to a minute. The right password
resets it. Once it is engaged at most one guess a minute gets through, however many
sessions guess at once: an attempt books its slot before the password is compared.
The price: while someone keeps guessing, the operator too gets one try a minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

FREE_FAILURES = 5
FIRST_WAIT_S = 1.0
MAX_WAIT_S = 60.0


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()  # Streamlit runs each browser session in its own thread
        self._failures = 0
        self._next_try = 0.0

    def wait_s(self) -> float:
        """Seconds until the next attempt is heard; 0 when it may be tried now."""
        with self._lock:
            return max(0.0, self._next_try - self.clock())

    def attempt(self) -> float:
        """Take a turn: 0 to go ahead and compare, else the seconds to wait (nothing compared).

        The turn counts as a failure until ``succeeded()`` says otherwise, so parallel
        attempts cannot all slip through the same open moment.
        """
        with self._lock:
            now = self.clock()
            if now < self._next_try:
                return self._next_try - now
            self._failures += 1
            extra = self._failures - FREE_FAILURES
            if extra > 0:
                self._next_try = now + min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** (extra - 1))
            return 0.0

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._next_try = 0, 0.0


THROTTLE = LoginThrottle()  # the dashboard process's one throttle
