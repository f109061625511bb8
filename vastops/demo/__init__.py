"""The demo (``vastops demo``): everything on one machine, with a past and a gateway of its own.

fleet     the demo's fleet of two (a chat and an embedding model): its fleet file, each rental
history   60 days of plausible sessions, audit rows and requests from named consumers, per instance
traffic   the live demo's gateway: a few LLM requests after each start, reported to ``/activity``
run       the ``vastops demo`` command: simulator, watchdog, proxy and dashboard on a fresh ledger
"""
