"""The control layer: the use cases every shell (the CLI, the dashboard, the watchdog, the wake proxy) calls.

By composition: ``Control`` holds an ``Observer`` and a ``Power`` and passes calls on by name.

- ``answers``: ``Control``, the one door the shells call; the status answer, activity,
  heartbeats (whether a watchdog enforces) and the reports.
- ``observe``: ``Observer``, the wiring (settings, ledger, vast.ai client, clock) and the
  observation of vast.ai that opens and closes sessions and advances a pending start;
  ``OnObserver``, the wiring passed on by name to ``Power`` and ``Control``.
- ``fleetlook``: a fleet's looks at vast.ai: one list call answers every member's show (``FleetLook``),
  each member's other calls its own (``MemberClient``).
- ``guardrails``: the stop rules' inputs from the ledger (``StopInputs``), budgets in figures and words.
- ``power``: ``Power``, start, stop, reboot and keepalive under the guardrails (budgets), the
  stop rules' inputs read from the ledger, and the watchdog's stops as recorded.
- ``charges``: vast.ai's own charges fetched into the ledger a billing day at a time (paced,
  paged, settled days never again), and the host's pending price rise.
- ``status``: ``StatusAnswer``, the status answer as one typed model (its budget and warning
  lines too) that the API, the CLI and the dashboard read; the fields the API sends.
"""
