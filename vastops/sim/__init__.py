"""A local simulator of the vast.ai REST API: the real service's twin, for the demo and the tests.

The modules (the simulator is one object, ``Simulator``; the other modules are its parts):

    world       ``Simulator``: instances and their lifecycle, billing, credit and invoices,
                and the Python-side control (console, faults, run-time config, reset, state)
    config      ``SimInstance`` and ``SimConfig``, and the checks a run-time change passes
    instance    one instance's run-time state and its billing views (seconds, bytes, cost)
    containers  the container's ports (22, 8000, 8001), their health, the LLM behind them
    llm         the echo model's answers, with no sockets and no clock (containers serve them)
    logs        the instance's log: vast's lines for each phase and the model server's
    rows        vast's instance row, the machine's offer, ``/_sim/state``'s fuller row
    routes      vast's REST routes, the key check, rate limits, faults, the call log, ``/_sim/``
    queries     vast's query syntax: filters, sort keys, ranges, pages and page tokens
    servers     the HTTP server and handler the API port and the container ports share
    run         the ``vastops sim`` command: its options, the env file it prints, the run
    __main__    ``python -m vastops.sim``

Nothing is imported here: ``vastops.sim.run`` is cheap to import, the simulator is in
``vastops.sim.world``.

Source of truth: docs/vast-api.md (cited below as §n; §8 describes the simulator).

What it models:
- The calls vastops and vast's own client (``vastai`` 1.9.1) make for one account: show, the v1
  list (``select_filters``, ``order_by``, ``select_cols``, pages), ``instances/filters/``,
  start/stop/label (the state PUT), reboot, request_logs (a ``result_url`` serving the log text),
  the deposit, the current user, charges and invoices (vast's fields, filters and pages), with
  vast's paths, bodies and error shapes (§2, §4) and the quirks a client has to survive: an
  unknown id answers 200 ``{"instances": null}``, the bad-key status varies (401 on instance
  endpoints and the user, 404 on charges and invoices, 403 without a key), the v0 list answers
  410, ``public_ipaddr`` carries a trailing space and ``HostPort`` is a string.
- Instance rows with every field a real row has (the SDK's ``vastai/data/instance.py`` and
  vast's docs list them), types and units as vast documents them (§3).
- Every ``actual_status`` on a path that can reach it (§3, §6):
    null (a new instance being created) -> ``created`` -> ``loading`` -> ``running``;
    a start: scheduling (intended running, actual ``exited``, cur_state stopped; as long as the
    GPU is taken: ``gpu_free_after_s``) -> ``created`` -> ``loading`` -> ``running``;
    a stop: intended stopped, actual still ``running`` for ``stop_s`` -> ``exited``;
    ``frozen`` (console freeze: billed), ``rebooting`` (reboot: billed) -> ``loading`` ->
    ``running``, ``exited`` with an error in ``status_msg`` (a container crash), ``unknown`` then
    ``offline`` (the host is gone: nothing is billed), and the one-answer ``status`` fault.
  Everything is worked out lazily from an injected clock, so a test moves a fake clock and sees
  transitions and billing with no sleeps.
- Per-second billing (§4): compute while running, frozen or rebooting; storage every second the
  instance exists and its host is online; bandwidth per byte (``inet_up_cost``/``inet_down_cost``,
  $/GB) from simulated traffic: the bytes the container listeners serve and receive (times
  ``traffic_scale``) plus ``traffic_*_gb_per_h`` while running. The account's credit is spent as
  the instances bill; at zero vast stops every instance (storage keeps billing) and refuses starts.
- Each start gives every container port (22, 8000, 8001) its own new loopback listener, so its
  own host port, which changes on every start (§3, §10). 8000 and 8001 serve the health path and
  an OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
  streamed or not) of a deterministic echo model, ``token_s`` a token (vastops/sim/llm.py); all
  503 until ``health_delay_s`` after running, never with ``health_never``. 22 answers an SSH
  banner. A port that is gone answers nothing, and cuts an answer it is streaming.
- Per-endpoint, per-identity rate limits (§5) as a token bucket (burst 3): 429 with a
  plain-text body and no Retry-After.
- Fault injection, a call log, the event log and run-time control, in Python and under
  ``/_sim/`` over HTTP (loopback only).

Where it still differs from the real service (docs/vast-api.md §8 keeps the same list):
- Search offers (``POST /api/v0/bundles/``) lists only the machines of the account's instances,
  one offer each of all its GPUs: ``rented`` while anyone holds them (another client while a
  start waits for them, or the instance itself). Whether vast lists a stopped instance's
  released GPUs like this is a guess (§9).
- No create, destroy, recycle, bulk PUT, volumes, serverless, templates, ssh keys,
  teams, execute, copy or scheduled jobs: those paths answer 404 ``not_found``. New instances
  exist only as configured (``SimInstance.initial = "creating"`` plays a fresh rental).
- What vast writes in ``status_msg`` and in the log for each phase, the text of its refusals
  (insufficient credit, reboot of a stopped instance) and of a queued start are guesses.
- A start while a stop is still in progress starts over at scheduling; a start on a crashed
  instance restarts its container; a crashed container is not billed; after a host comes back
  every instance that should run restarts (created -> loading -> running).
- Injected 500/502/503 answers are HTML error pages (like a proxy's), not vast JSON.
- The LLM is an echo model (words for tokens): no tools, logprobs, n > 1, batched prompts,
  embeddings or API key; a freeze or reboot cuts an answer off like a stop.
- ``balance`` in the user mirrors ``credit`` (what vast means by it is unclear, §4); the user
  answer carries no ``api_key`` (vast's does; its SDK drops it). Deposits are simulated
  (``deposit()``, ``POST /_sim/deposit``) and show as ``credit`` invoices.
- ``users/current``, ``filters/``, deposit, logs and invoices are not rate limited (vast
  publishes no threshold for them). ssh fields (``ssh_host``/``ssh_port``) are decorative.
- Bandwidth is GB = 10^9 bytes; ``inet_*_billed`` counts kilobytes (1024 bytes); both units
  are unsure. The machine's figures (``inet_up``, ``dlperf``, ``reliability2``, ...) are fixed.
"""
