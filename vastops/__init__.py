"""vastops: run rented vast.ai GPUs without burning money.

The map (read this first; tests/core/test_docs.py keeps it true). The foundation at the
root is imported by everything and imports nothing of the components; each component
is a package whose own ``__init__`` lists its modules.

    config        every variable, typed and bounded; one message naming a bad one
    fleet         the instances vastops controls, by name, each with its own settings (the fleet file)
    clock         "now" as an injectable function, the steady clock, ISO-8601
    vocabulary    every word the ledger stores or the API sends, and their groupings
    words         money, rates, durations and stop causes in words, one way
    errors        every error a shell shows, with its HTTP status and exit code
    costs         the cost formula, in Python and in SQL
    stops         the stop rules as plain functions: idle, keepalive, limits, budgets
    vast          the vast.ai client: the only code that knows vast's paths and fields
    cli           the ``vastops`` command tree; each command imports what it runs
    fleetcli      the CLI on a whole fleet: status, costs and audit over every instance, on/off --all
    processes     starting and watching the long-running processes (ports, signals, systemd's notify)

    ledger/       the SQLite ledger: schema, migrations, connections, named queries, spool
    reports/      read-only reports: periods, sessions and CSV, audit pages, consumers
    control/      the use cases the shells call: observe vast.ai, power on/off, answers
    access/       who may: roles, named dashboard accounts and API keys, the key ring
    watchdog/     the watchdog process: the enforcing engine, its HTTP API, notifications
    instance/     what runs on the GPU: the template, booking, the health probe, the VM kit
    proxy/        the wake proxy: an OpenAI-compatible front that starts a stopped GPU
    dashboard/    what the Streamlit dashboard's process needs: login, run
    sim/          a local, faithful vast.ai for the demo and the tests
    demo/         the demo: a simulated past, a live gateway, the three processes
    integrations/ drop-in reporters for LLM gateways (LiteLLM), standard library only
"""

__version__ = "0.1.0"
