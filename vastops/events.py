"""Audit event types and actors: the vocabulary of the audit trail.

The first seven are SPEC.md's; the rest are vastops' own, for what SPEC.md has no
word for (failures, and starts/stops made outside vastops).
"""

POWER_ON_REQUESTED = "power_on_requested"
POWER_ON_COMPLETE = "power_on_complete"
POWER_ON_HEALTH_TIMEOUT = "power_on_health_timeout"
POWER_OFF_REQUESTED = "power_off_requested"
POWER_OFF_COMPLETE = "power_off_complete"
AUTO_SHUTDOWN = "auto_shutdown"
AUTO_SHUTDOWN_COMPLETE = "auto_shutdown_complete"

POWER_ON_FAILED = "power_on_failed"  # vast.ai refused or failed the start call
POWER_ON_ABORTED = "power_on_aborted"  # stopped before it became healthy
POWER_OFF_FAILED = "power_off_failed"  # vast.ai refused or failed the stop call
EXTERNAL_START = "external_start"  # seen running without a start from vastops
EXTERNAL_STOP = "external_stop"  # seen stopped without a stop from vastops

SPEC_EVENTS = (
    POWER_ON_REQUESTED,
    POWER_ON_COMPLETE,
    POWER_ON_HEALTH_TIMEOUT,
    POWER_OFF_REQUESTED,
    POWER_OFF_COMPLETE,
    AUTO_SHUTDOWN,
    AUTO_SHUTDOWN_COMPLETE,
)
ALL_EVENTS = SPEC_EVENTS + (POWER_ON_FAILED, POWER_ON_ABORTED, POWER_OFF_FAILED, EXTERNAL_START, EXTERNAL_STOP)

ACTORS = ("dashboard", "api", "cli", "system")
