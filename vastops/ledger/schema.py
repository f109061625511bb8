"""The ledger's schema: its tables, and the append-only migrations that build them.

Tables (every row keyed by ``instance_id``, so a fleet is configuration, not a
migration):

    sessions    one row per running period: start, end, rates seen at the start,
                compute / storage cost, how it ended and who ended it. A partial
                unique index allows one open session per instance, so two
                processes can never open it twice.
    audit       the append-only audit trail (triggers refuse UPDATE and DELETE).
    instances   the last observation of each instance, its last activity, and a
                power-on in flight ("pending") that the watchdog completes.
    heartbeats  each long-running component's latest sign of life, per instance.
    leases      one enforcer per instance: the watchdog that holds it.
    applied     the spooled records already written (each once).
    cursors     how far a reader of the audit trail got (the notifier).
    requests    the gateway's LLM requests: start, end, consumer, model, tokens;
                one row per request id, written by the watchdog once a second.
    charges     vast's own charges per day and kind (charge_days: which days were
                fetched); stopped_rates, bandwidth: what bills outside sessions;
                activity_minutes: the busy minutes, for the what-if on idle minutes.
    accounts    named dashboard accounts and API keys with their roles, their
                secrets hashed (vastops/access/); a removed one is kept, marked.
    request_hours  the requests rolled up per settled hour, session, line and model
                (vastops/reports/settle.py); raw rows go after VASTOPS_REQUESTS_KEEP_DAYS.
    kept_days   each settled day's sessions as the reports read them, so a report on a
                long past reads a row per day instead of every session.
    settled     how far each instance's hours are rolled up and its raw rows kept.

The file's ``PRAGMA user_version`` is the number of migrations applied. A new
release appends a migration and never edits an old one: a ledger written by any
earlier release upgrades in place, keeping its rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from vastops.errors import LedgerError

if TYPE_CHECKING:
    from vastops.ledger.store import Database

# Versioned migrations: index i upgrades user_version i -> i+1. Append only.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        gpu_name TEXT,
        dph_base REAL NOT NULL DEFAULT 0,       -- $/h compute, as vast quoted it at the start
        storage_dph REAL NOT NULL DEFAULT 0,    -- $/h disk, as vast quoted it at the start
        started_by TEXT NOT NULL,               -- actor, or 'external' (vast's console)
        ended_by TEXT,
        end_reason TEXT,                        -- manual | auto_shutdown | external
        runtime_s REAL,
        compute_cost_usd REAL,
        storage_cost_usd REAL,
        cost_usd REAL
    );
    CREATE UNIQUE INDEX sessions_one_open ON sessions(instance_id) WHERE ended_at IS NULL;
    CREATE INDEX sessions_by_start ON sessions(instance_id, started_at);

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        instance_id INTEGER,
        event TEXT NOT NULL,
        actor TEXT NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_by_ts ON audit(ts);
    CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
    CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

    CREATE TABLE instances (
        instance_id INTEGER PRIMARY KEY,
        status TEXT,
        gpu_name TEXT,
        dph_base REAL,
        storage_dph REAL,
        endpoint_base_url TEXT,
        message TEXT,
        observed_at TEXT,
        acted_at TEXT,                -- when vastops last started/stopped it; older observations are stale
        last_activity TEXT,
        activity_count INTEGER NOT NULL DEFAULT 0,
        pending TEXT,                 -- 'power_on' while a start awaits running + /health
        pending_since TEXT,
        pending_actor TEXT,
        pending_audit_id INTEGER,     -- the power_on_requested row it answers
        pending_health_path TEXT,
        pending_health_port INTEGER
    );

    CREATE TABLE heartbeats (
        component TEXT PRIMARY KEY,
        ts TEXT NOT NULL,
        pid INTEGER,
        info TEXT NOT NULL DEFAULT '{}'
    );
    """,
    """
    -- when the last start settled (healthy, or gave up waiting): the idle clock starts no earlier
    ALTER TABLE instances ADD COLUMN idle_from TEXT;
    -- when the last observation applied was asked: an answer asked before it is stale
    ALTER TABLE instances ADD COLUMN observation_asked_at TEXT;
    -- reports over every instance bound started_at without an instance id
    CREATE INDEX sessions_by_start_any_instance ON sessions(started_at);
    """,
    """
    -- one enforcer per instance: the watchdog that holds the lease (renewed by its heartbeat)
    CREATE TABLE leases (
        instance_id INTEGER PRIMARY KEY,
        holder TEXT NOT NULL,          -- a random token of the holding process
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        renewed_at TEXT NOT NULL
    );
    -- records written after the fact (spooled while the ledger failed): each applied once
    CREATE TABLE applied (
        id TEXT PRIMARY KEY,
        applied_at TEXT NOT NULL
    );
    -- when vast.ai was first seen not running while a session was open: a stop is
    -- confirmed by a second look at least 10 s later (or by intended_status stopped)
    ALTER TABLE instances ADD COLUMN not_running_since TEXT;
    """,
    """
    -- when a pending start got its GPU (left scheduling): its health timeout counts from then
    ALTER TABLE instances ADD COLUMN pending_gpu_at TEXT;
    -- the account's credit as vast.ai last said it, and when
    ALTER TABLE instances ADD COLUMN credit_usd REAL;
    ALTER TABLE instances ADD COLUMN credit_seen_at TEXT;
    """,
    """
    -- a keepalive: the idle stop comes no earlier than this (cleared when a session ends)
    ALTER TABLE instances ADD COLUMN keepalive_until TEXT;
    -- "the last row of this event" (a budget's override, a warning, the kept log) without a scan
    CREATE INDEX audit_by_event ON audit(instance_id, event, id);
    -- how far a reader of the audit trail got (the notifier: vastops/watchdog/notify.py)
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL
    );
    """,
    """
    -- the gateway's LLM requests (POST /infra/vast/activity with a body: vastops/watchdog/inflight.py),
    -- written by the watchdog's once-a-second flush; costs per consumer are computed from it
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER,
        session_id INTEGER,                    -- the open session when it started
        request_id TEXT NOT NULL,              -- the gateway's id
        consumer TEXT,
        model TEXT,
        started_at TEXT,                       -- an end without a start seen: its end (zero busy time)
        ended_at TEXT,                         -- NULL while in flight
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        expired INTEGER NOT NULL DEFAULT 0,    -- 1: no end came, the TTL ended it (ended_at = started_at + TTL)
        UNIQUE(instance_id, request_id)
    );
    CREATE INDEX requests_by_start ON requests(instance_id, started_at);
    CREATE INDEX requests_in_flight ON requests(instance_id, started_at) WHERE ended_at IS NULL;
    -- the latest TTL expiry (the idle clock runs from it) without a scan
    CREATE INDEX requests_expired ON requests(instance_id, ended_at) WHERE expired = 1;
    """,
    """
    -- what the watchdog's last health probe of the running instance said (vastops/instance/health.py):
    -- "healthy", or "engine_dead" (vLLM's own 503 after it was healthy); null: not known since the start
    ALTER TABLE instances ADD COLUMN serving TEXT;
    ALTER TABLE instances ADD COLUMN serving_since TEXT;
    -- the session whose dead engine the watchdog rebooted by itself (VAST_AUTO_REBOOT_ON_DEAD_ENGINE: once)
    ALTER TABLE instances ADD COLUMN engine_rebooted_session INTEGER;
    """,
    """
    -- the agent on the instance (vastops/instance/agent.py): until when the watchdog's last lease
    -- holds, and when it was renewed; the agent enforces by itself once it lapses
    ALTER TABLE instances ADD COLUMN agent_lease_until TEXT;
    ALTER TABLE instances ADD COLUMN agent_renewed_at TEXT;
    -- where the last activity came from: gateway (POST /activity) or vllm (the agent's reading of vLLM's load)
    ALTER TABLE instances ADD COLUMN activity_source TEXT;
    -- the session in which vLLM's own load was first seen holding the instance (audited once a session)
    ALTER TABLE instances ADD COLUMN vllm_seen_session INTEGER;
    """,
    """
    -- vast's own charges for the instance, per billing day (UTC: vastops/costs.py) and kind
    -- (gpu, disk, bwd, bwu), fetched by the watchdog (vastops/control/charges.py)
    CREATE TABLE charges (
        instance_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        kind TEXT NOT NULL,
        amount_usd REAL NOT NULL,
        PRIMARY KEY (instance_id, day, kind)
    ) WITHOUT ROWID;
    -- the days whose charges were fetched (a day without rows was charged nothing), and whether
    -- they are settled (fetched after the day ended: never fetched again)
    CREATE TABLE charge_days (
        instance_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        fetched_at TEXT NOT NULL,
        settled INTEGER NOT NULL DEFAULT 0,
        note TEXT,                              -- what looking at vast's rows found odd (a row spanning days)
        PRIMARY KEY (instance_id, day)
    ) WITHOUT ROWID;
    -- the disk's rate while stopped, as vast showed it while stopped, from ``since`` on
    CREATE TABLE stopped_rates (
        instance_id INTEGER NOT NULL,
        since TEXT NOT NULL,
        storage_dph REAL NOT NULL,
        PRIMARY KEY (instance_id, since)
    ) WITHOUT ROWID;
    -- bytes vast billed per UTC day (from the instance row's counters), for the bandwidth line
    CREATE TABLE bandwidth (
        instance_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        up_bytes REAL NOT NULL DEFAULT 0,
        down_bytes REAL NOT NULL DEFAULT 0,
        up_cost_usd REAL NOT NULL DEFAULT 0,
        down_cost_usd REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (instance_id, day)
    ) WITHOUT ROWID;
    -- the minutes with activity (one row per busy minute, kept VASTOPS_ACTIVITY_KEEP_DAYS): the what-if on idle minutes
    CREATE TABLE activity_minutes (
        instance_id INTEGER NOT NULL,
        minute TEXT NOT NULL,                   -- YYYY-MM-DDTHH:MM (UTC)
        PRIMARY KEY (instance_id, minute)
    ) WITHOUT ROWID;
    -- a session's last activity: its idle tail runs from there to its end
    ALTER TABLE sessions ADD COLUMN last_activity_at TEXT;
    -- the contract (vast's start_date/end_date), its traffic rates and counters, a pending price rise (JSON)
    ALTER TABLE instances ADD COLUMN contract_start TEXT;
    ALTER TABLE instances ADD COLUMN contract_end TEXT;
    ALTER TABLE instances ADD COLUMN inet_up_cost REAL;
    ALTER TABLE instances ADD COLUMN inet_down_cost REAL;
    ALTER TABLE instances ADD COLUMN up_billed_bytes REAL;
    ALTER TABLE instances ADD COLUMN down_billed_bytes REAL;
    ALTER TABLE instances ADD COLUMN price_rise TEXT;
    ALTER TABLE instances ADD COLUMN destroyed_at TEXT;
    """,
    # 10: who did it, and who may (vastops/access/): named dashboard accounts and API keys, the person in
    # every audit row, and who started and ended each session
    """
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,                     -- 'user' (the dashboard) or 'key' (X-API-Key)
        name TEXT NOT NULL,
        role TEXT NOT NULL,                     -- vastops.access.roles.Role
        secret TEXT,                            -- a user's salted password hash (None: single sign-on only), a key's SHA-256
        created_at TEXT NOT NULL,
        created_by TEXT,
        removed_at TEXT                         -- removed or revoked: kept, so the audit's names stay explained
    );
    CREATE UNIQUE INDEX accounts_live ON accounts(kind, name) WHERE removed_at IS NULL;
    CREATE INDEX accounts_by_secret ON accounts(secret) WHERE removed_at IS NULL;
    ALTER TABLE audit ADD COLUMN person TEXT;
    CREATE INDEX audit_by_person ON audit(person, id) WHERE person IS NOT NULL;
    ALTER TABLE instances ADD COLUMN pending_person TEXT;
    ALTER TABLE sessions ADD COLUMN started_by_person TEXT;
    ALTER TABLE sessions ADD COLUMN ended_by_person TEXT;
    """,
    # 11: a year of a busy gateway (vastops/reports/settle.py): the requests rolled up per settled hour,
    # each settled day's sessions kept as the reports read them, and how far each instance is settled.
    # A change to what a settled hour or day was made of (a late request, a session's end corrected,
    # a start's outcome recorded late) unsettles it here, in the same transaction, so no kept figure
    # can outlive the rows it was made from: the next settle round makes it again.
    """
    CREATE TABLE request_hours (
        instance_id INTEGER NOT NULL,
        hour TEXT NOT NULL,                     -- YYYY-MM-DDTHH (UTC)
        session_id INTEGER NOT NULL,            -- 0: no session ran (the requests count, nothing costs)
        kind TEXT NOT NULL,                     -- consumer | start-up | idle (vastops/reports/consumers.py)
        consumer TEXT NOT NULL,                 -- the consumer; start-up and idle: the kind again
        model TEXT NOT NULL,                    -- '' when the gateway named none
        requests INTEGER NOT NULL,              -- started in this hour
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        busy_s REAL NOT NULL,                   -- this line's seconds of the session in this hour
        PRIMARY KEY (instance_id, hour, session_id, kind, consumer, model)
    ) WITHOUT ROWID;
    CREATE TABLE kept_days (
        instance_id INTEGER NOT NULL,
        day TEXT NOT NULL,                      -- a billing day (vastops/costs.py) before which nothing changes by itself
        inside TEXT NOT NULL,                   -- the day's row of periods.Scan: the sessions inside it, as JSON
        others TEXT,                            -- the sessions started that day that run past its midnight, whole
        started INTEGER NOT NULL,               -- the sessions started that day, whole: number, runtime, costs
        runtime_s REAL NOT NULL,
        compute_usd REAL NOT NULL,
        storage_usd REAL NOT NULL,
        waste TEXT NOT NULL,                    -- the day's idle waste and kept-off, and its automatic stops (reports/waste.py)
        PRIMARY KEY (instance_id, day)
    ) WITHOUT ROWID;
    -- per instance: 'hours' (request_hours are made for the hours before ``until``) and 'raw' (the
    -- request rows are all there from ``until`` on, so hours from there can be made again)
    CREATE TABLE settled (
        instance_id INTEGER NOT NULL,
        what TEXT NOT NULL,
        until TEXT NOT NULL,
        PRIMARY KEY (instance_id, what)
    ) WITHOUT ROWID;
    CREATE TRIGGER requests_unsettle_insert AFTER INSERT ON requests
        WHEN NEW.started_at < (SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'hours')
        BEGIN
            UPDATE settled SET until = MAX(substr(NEW.started_at, 1, 13) || ':00:00.000Z',
                COALESCE((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'raw'), ''))
            WHERE instance_id = NEW.instance_id AND what = 'hours';
            DELETE FROM request_hours WHERE instance_id = NEW.instance_id
                AND hour >= substr((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'hours'), 1, 13);
        END;
    CREATE TRIGGER requests_unsettle_update AFTER UPDATE OF ended_at, consumer, model, prompt_tokens, completion_tokens ON requests
        WHEN NEW.started_at < (SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'hours')
        BEGIN
            UPDATE settled SET until = MAX(substr(NEW.started_at, 1, 13) || ':00:00.000Z',
                COALESCE((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'raw'), ''))
            WHERE instance_id = NEW.instance_id AND what = 'hours';
            DELETE FROM request_hours WHERE instance_id = NEW.instance_id
                AND hour >= substr((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'hours'), 1, 13);
        END;
    CREATE TRIGGER sessions_unsettle_insert AFTER INSERT ON sessions
        BEGIN
            DELETE FROM kept_days WHERE instance_id = NEW.instance_id AND day >= substr(NEW.started_at, 1, 10);
            UPDATE settled SET until = MAX(substr(NEW.started_at, 1, 13) || ':00:00.000Z',
                COALESCE((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'raw'), ''))
            WHERE instance_id = NEW.instance_id AND what = 'hours' AND until > NEW.started_at;
            DELETE FROM request_hours WHERE instance_id = NEW.instance_id
                AND hour >= substr((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'hours'), 1, 13);
        END;
    CREATE TRIGGER sessions_unsettle_update AFTER UPDATE OF instance_id, started_at, ended_at, runtime_s, compute_cost_usd,
            storage_cost_usd, dph_base, storage_dph, end_reason, last_activity_at ON sessions
        BEGIN
            DELETE FROM kept_days WHERE instance_id IN (OLD.instance_id, NEW.instance_id)
                AND day >= substr(MIN(OLD.started_at, NEW.started_at), 1, 10);
            UPDATE settled SET until = MAX(substr(MIN(COALESCE(OLD.ended_at, NEW.ended_at, NEW.started_at),
                    COALESCE(NEW.ended_at, OLD.ended_at, NEW.started_at),
                    CASE WHEN OLD.started_at IS NOT NEW.started_at OR OLD.instance_id IS NOT NEW.instance_id
                         THEN MIN(OLD.started_at, NEW.started_at) ELSE '9999' END), 1, 13) || ':00:00.000Z',
                COALESCE((SELECT until FROM settled s WHERE s.instance_id = settled.instance_id AND what = 'raw'), ''))
            WHERE instance_id IN (OLD.instance_id, NEW.instance_id) AND what = 'hours'
                AND until > MIN(COALESCE(OLD.ended_at, NEW.ended_at, NEW.started_at), COALESCE(NEW.ended_at, OLD.ended_at, NEW.started_at),
                    CASE WHEN OLD.started_at IS NOT NEW.started_at OR OLD.instance_id IS NOT NEW.instance_id
                         THEN MIN(OLD.started_at, NEW.started_at) ELSE '9999' END);
            DELETE FROM request_hours WHERE instance_id IN (OLD.instance_id, NEW.instance_id)
                AND hour >= substr((SELECT until FROM settled s WHERE s.instance_id = request_hours.instance_id AND what = 'hours'), 1, 13);
        END;
    CREATE TRIGGER sessions_unsettle_delete AFTER DELETE ON sessions
        BEGIN
            DELETE FROM kept_days WHERE instance_id = OLD.instance_id AND day >= substr(OLD.started_at, 1, 10);
            UPDATE settled SET until = MAX(substr(OLD.started_at, 1, 13) || ':00:00.000Z',
                COALESCE((SELECT until FROM settled WHERE instance_id = OLD.instance_id AND what = 'raw'), ''))
            WHERE instance_id = OLD.instance_id AND what = 'hours' AND until > OLD.started_at;
            DELETE FROM request_hours WHERE instance_id = OLD.instance_id
                AND hour >= substr((SELECT until FROM settled WHERE instance_id = OLD.instance_id AND what = 'hours'), 1, 13);
        END;
    -- a destroyed instance's disk and kept-off time end there
    CREATE TRIGGER instances_unsettle AFTER UPDATE OF destroyed_at ON instances
        BEGIN
            DELETE FROM kept_days WHERE instance_id = NEW.instance_id
                AND day >= substr(MIN(COALESCE(OLD.destroyed_at, '9999'), COALESCE(NEW.destroyed_at, '9999')), 1, 10);
        END;
    -- a start's outcome decides where a session's start-up ends (vastops/reports/consumers.py, rule 3)
    CREATE TRIGGER audit_unsettle AFTER INSERT ON audit
        WHEN NEW.event IN ('power_on_complete', 'power_on_health_timeout')
            AND NEW.ts < (SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'hours')
        BEGIN
            UPDATE settled SET until = MAX(substr(COALESCE((SELECT MAX(started_at) FROM sessions
                    WHERE instance_id = NEW.instance_id AND started_at <= NEW.ts), NEW.ts), 1, 13) || ':00:00.000Z',
                COALESCE((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'raw'), ''))
            WHERE instance_id = NEW.instance_id AND what = 'hours';
            DELETE FROM request_hours WHERE instance_id = NEW.instance_id
                AND hour >= substr((SELECT until FROM settled WHERE instance_id = NEW.instance_id AND what = 'hours'), 1, 13);
        END;
    """,
    """
    -- a fleet (vastops/fleet.py): each instance's watch beats for itself (0: no instance)
    CREATE TABLE heartbeats_new (
        component TEXT NOT NULL,
        instance_id INTEGER NOT NULL DEFAULT 0,
        ts TEXT NOT NULL,
        pid INTEGER,
        info TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (component, instance_id)
    );
    -- the one instance's watchdog beat before: its beat is that instance's
    INSERT INTO heartbeats_new (component, instance_id, ts, pid, info)
        SELECT component, COALESCE((SELECT CASE WHEN COUNT(*) = 1 THEN MIN(instance_id) END FROM instances), 0), ts, pid, info
        FROM heartbeats;
    DROP TABLE heartbeats;
    ALTER TABLE heartbeats_new RENAME TO heartbeats;
    """,
]


def schema_version(db: Database, path: Path) -> int:
    """The file's schema version; ``LedgerError`` when a newer vastops wrote it (nothing is changed then)."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise LedgerError(
            f"the ledger {path} has schema version {version}, and this vastops understands versions up to "
            f"{len(MIGRATIONS)}: a newer vastops wrote it; upgrade vastops (or point VASTOPS_DB elsewhere)"
        )
    return version


def migrate(db: Database, path: Path) -> None:
    """Bring the file up to ``len(MIGRATIONS)``, all in one transaction."""
    db.execute("BEGIN IMMEDIATE")  # two processes starting at once migrate once
    try:
        version = schema_version(db, path)  # again, under the lock: another process may have migrated
        for number in range(version, len(MIGRATIONS)):
            for statement in statements(MIGRATIONS[number]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={number + 1}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def statements(script: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], ""
    for line in script.splitlines():
        line = line.split("--", 1)[0].rstrip() if "--" in line else line.rstrip()
        if not line.strip():
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
