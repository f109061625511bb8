"""The watchdog process (``vastops watchdog``): the one process that enforces auto-shutdown.

    engine        ``Watch``: the deadline timer, activity in memory, the looks at vast.ai,
                  the stop made before anything is written
    housekeeping  what it does besides stopping: heartbeat and lease, the spool, clock
                  steps, warnings, the notification pump
    problems      ``Problems``: what impairs enforcement now (``/healthz``, heartbeat, log)
    inflight      the gateway's requests in flight: the body's rules, their holds, their rows
    lease         one enforcer per instance: the lease in the ledger
    fleet         ``Members``: one watch per instance of a fleet, by name, id or model; their leases
    agentlink     the lease to the instance's agent (the dead-man switch) and vLLM's load back
    money         the hourly money round: vast's charges, price rises, notices of what bills
    settling      the settle round: settled hours and days kept, old request rows forgotten
    activity      the request body's limit and ``POST /infra/vast/activity``'s fast path
    app           the REST API of docs/contract.md around a ``Watch``: routes, error handlers,
                  the docs page with its assets from the package (``docs_assets/``)
    mount         ``mount_vastops(app)``: the API and auto-shutdown inside your own FastAPI app
    schemas       the API's wire models (what it reads and answers)
    metrics       ``/metrics``: the watchdog's collector (the ledger and the watch, read at scrape time)
    prometheus    what both processes' ``/metrics`` share: the registry, the families, a lock-free histogram
    monitoring    ``vastops monitoring DIR``: the alert rules and the Grafana dashboard (``monitoring/``)
    notify        notifications: the queue, the worker, the targets, the cursor, the stall
    webhook       one webhook post under one deadline, a capped answer
    channels      any other channel through Apprise (``vastops[notify]``), its tokens never logged
    messages      what each notified event says, in each format (Slack's escaped)
    serve         binding and serving with uvicorn, with the limits a service needs
    run           the ``vastops watchdog`` command

Nothing is imported here: ``from vastops.watchdog.engine import Watch`` names the module.
"""
