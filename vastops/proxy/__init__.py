"""The wake proxy (``vastops proxy``): the instance's OpenAI-compatible API, which starts the stopped GPU on a request.

- ``app``: the ASGI app: routing, the proxy's key, its limits on requests and waiting, the warm and cold paths, its answers and /metrics.
- ``fleet``: the fleet as the proxy reads it from the watchdog: which instance serves which model (a dict lookup), each instance's routes, wake, reports and endpoint; ``/v1/models`` for the fleet; an unknown model's 404.
- ``wake``: the wake state machine: one start for all that wait, its outcomes, holds, heartbeats and Retry-After.
- ``forward``: one request read and sent to the instance, its answer relayed with its usage; the path rule and the headers that pass.
- ``reports``: the activity reports to the watchdog (each request's start and end), retried until taken.
- ``run``: the ``vastops proxy`` command: its options, its limits from the file-descriptor limit, the server.
"""
