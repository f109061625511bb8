"""The demo (``vastops demo``): everything on one machine, with a past and a gateway of its own.

history   60 days of plausible sessions, audit rows and requests from named consumers
traffic   the live demo's gateway: a few LLM requests after each start, reported to ``/activity``
run       the ``vastops demo`` command: simulator, watchdog, proxy and dashboard on a fresh ledger
"""
