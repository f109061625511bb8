"""vastops: run a rented vast.ai GPU without burning money.

The core library. Every rule lives here; the dashboard (dashboard.py, pages/) and
the watchdog sidecar (watchdog/) only show and serve what these modules decide.

    config    settings from the environment / .env, validated
    clock     "now" as an injectable function, ISO-8601 formatting
    vast      the vast.ai client: requests, errors, status mapping
    ledger    the SQLite ledger shared by all processes
    costs     session cost maths and statistics
    deadline  the idle rule: when does auto-shutdown fire
    power     the use cases: status, power on/off, activity, audit
    sim       a local, faithful vast.ai for the demo and the tests
    cli       the `vastops` command
"""

__version__ = "0.1.0"
