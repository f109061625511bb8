"""The ledger: the one SQLite file the watchdog, the dashboard and the CLI share, and all its SQL.

    store     ``Ledger``: opens and migrates the file, hands out connections (read, view,
              write), writes records and drains the spool; ``Database``, ``connect``
    schema    the tables and the append-only migrations (``PRAGMA user_version``)
    queries   the named queries: ``View`` (reads) and ``Tx`` (writes, in one transaction)
    billing   their part for what bills outside sessions and vast's own charges (``BillingView``,
              ``BillingWrites``): the contract, stopped rates, traffic, charges, busy minutes
    settled   their part for what settled: hours of requests rolled up, days kept, old rows
              forgotten, free pages given back (``SettledWrites``)
    accounts  their part for who may: named dashboard accounts and API keys, secrets hashed
              (``AccountsView``, ``AccountsWrites``)
    spool     records kept while the ledger fails, written once it works again
    rows      the rows the named queries return and the audit events' details, as TypedDicts

Nothing is imported here: ``from vastops.ledger.store import Ledger`` names the module.
"""
