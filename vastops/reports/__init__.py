"""The reports: read-only figures over the ledger for the dashboard, the API and the CLI, in SQL.

    ranges      UTC days as ledger timestamps, and the sessions overlapping a range
    periods     cost per UTC day and month (one pass over a range's sessions), this
                month so far, settled days; the Costs page's questions
    sessions    the totals of GET /costs, the sessions list, the sessions CSV (made by SQLite)
    audit       the Audit page: filters, keyset paging, the audit CSV; the proxy's cold starts
    consumers   cost per consumer: the one split rule, its report over UTC days, its CSV
    stopped     storage while stopped: per billing day, and the stopped instance now
    reconcile   the ledger's figures beside vast's charges per day and kind; flags and causes
    waste       idle waste (each session's idle tail), hours kept off by auto-shutdown
    whatif      what other idle limits would have cost, and their cold starts, from the busy minutes
    monthly     the monthly report: parts that add up, charged or estimated, its CSV
    settle      what settles, kept so no report grows with history: hours of requests rolled
                up, days of sessions kept, old request rows forgotten; their check
    commands    ``vastops reconcile``, ``vastops report`` and ``vastops ledger``

Nothing here writes but ``settle``, which keeps the figures the others read (through the
ledger's door, for the watchdog's settle round), and nothing is imported here: callers name
the module they mean.
"""
