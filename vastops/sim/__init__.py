"""A local simulator of the vast.ai REST API: the real service's twin, for the demo and the tests.

The modules (the simulator is one object, ``Simulator``; the other modules are its parts):

    world       ``Simulator``: instances and their lifecycle, billing, credit and invoices, reset, state
    console     the Python-side control ``Simulator`` takes: vast's console (start, stop, freeze,
                reboot, destroy), crashes, lost hosts, a dead engine, load, a host's price rise,
                a contract's end date, faults, run-time config, creation without the API, an
                instance's own key and the edge's token
    config      ``SimInstance``, ``SimOffer`` (and the default market), ``SimVolume``,
                ``BillingHistory`` and ``SimConfig``, and the checks a run-time change passes
    instance    one instance's run-time state, its contract's rates and its billing views
    billing     what a contract billed, span by span at the rate of its time, and the views over it
                (seconds, bytes, cost, burn rate, the charge items of a range); the account's volume
    charges     ``GET /api/v0/charges/``: a row per contract, items per kind and rate, vast's rounding
    contracts   the contract's end (a stop, then deletion), a host's price rise (pending, then
                applied), a contract's billed past (``--billing-history``)
    market      vast's market: search offers, renting an offer (``new_contract``), destroy
    containers  the container's ports (22 and the published ones), their health, the LLM behind them
    edge        vast's auth edge (Caddy) in front of a vast image's ports: credentials, placeholders
    metrics     vLLM's ``/metrics`` on the LLM's ports (Prometheus text, vLLM's names)
    llm         the echo model's answers, with no sockets and no clock (containers serve them)
    logs        the instance's log: vast's lines for each phase and the model server's
    rows        vast's instance row, the machine's offer, ``/_sim/state``'s fuller row
    routes      vast's REST routes, the key check (an instance's own key too), rate limits,
                faults, the call log
    backstage   the simulator's own routes under ``/_sim/`` (loopback only)
    queries     vast's query syntax: filters, sort keys, ranges, pages and page tokens
    servers     the HTTP server and handler the API port and the container ports share
    agents      the real agent (vastops/instance/agent.py) as a child process of each running
                container (``SimConfig.run_agent``), and vLLM's ``/metrics`` as it reads it
                inside the container (``/_sim/vllm/<id>/metrics``)
    run         the ``vastops sim`` command: its options, the env file it prints, the run
    __main__    ``python -m vastops.sim``

Nothing is imported here: ``vastops.sim.run`` is cheap to import, the simulator is in
``vastops.sim.world``.

Source of truth: docs/vast-api.md (cited below as §n; §8 describes the simulator).

What it models:
- The calls vastops and vast's own client (``vastai`` 1.9.1) make for one account: show, the v1
  list (``select_filters``, ``order_by``, ``select_cols``, pages), ``instances/filters/``,
  start/stop/label (the state PUT), reboot, request_logs (a ``result_url`` serving the log text),
  the deposit, the current user, charges and invoices (vast's fields, filters and pages), the
  pending price increases (vast's envelope, $/s and $/GB), with
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
- Per-second billing (§4): compute while running, frozen or rebooting (not while a start's or a
  creation's container loads); storage every second the instance exists and its host is online,
  at ``storage_total_cost`` while the contract runs and at its own ``storage_stopped_cost`` while
  it is stopped (vast: "typically higher"; default 1.5 x); bandwidth per byte
  (``inet_up_cost``/``inet_down_cost``, $/GB) from simulated traffic: the bytes the container
  listeners serve and receive (times ``traffic_scale``) plus ``traffic_*_gb_per_h`` while running.
  Every span billed carries the rate of its time (billing.py). The account's credit is spent as
  its contracts bill; at zero vast stops every instance (storage keeps billing) and refuses starts.
- Charges as vast's: a row per contract over the ``day`` range, items per kind and rate
  (``"1.000 hours at $0.400/hour"``, a rate change makes a second item), every amount rounded to
  3 decimals, a row's the rounded sum of its unrounded items; the account's volume
  (``SimConfig.volume``, on by default) is another contract in the same answer (``type:
  "volume"``, ``source: "volume-<id>"``), so a client must pick its rows by source.
- Rental contracts (contracts.py): each ends ``contract_days`` (`vastops sim`: 30) after the simulator made it
  (``end_date``; ``set_contract_end``, ``POST /_sim/contract_end``). A host's price rise
  (``price_rise``, ``POST /_sim/price_rise``) is listed as pending until that end and applies
  there; with none pending vast stops the instance at its end (compute ends at that instant, the
  disk bills on at its stopped rate, starts are refused) and deletes it 48 h later (it stays in
  the charges). A contract's billed past (``SimConfig.billing_history``, ``--billing-history``):
  its ``start_date`` and past sessions at the history's rates, its present rates its own.
- Each start gives every container port (22, 8000, 8001, or 22 and the ports its env publishes)
  its own new loopback listener, so its own host port, which changes on every start (§3, §10).
  The HTTP ports (8000 and 8001) serve the health path, vLLM's ``/metrics`` and
  an OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
  streamed or not) of a deterministic echo model, ``token_s`` a token (vastops/sim/llm.py); all
  503 until ``health_delay_s`` after running, never with ``health_never``. 22 answers an SSH
  banner. A port that is gone answers nothing, and cuts an answer it is streaming.
- Per-endpoint, per-identity rate limits (§5) as a token bucket (burst 3): 429 with a
  plain-text body and no Retry-After.
- Fault injection, a call log, the event log and run-time control, in Python and under
  ``/_sim/`` over HTTP (loopback only). A fault may be one instance's (``instance_id``: its
  show, state PUT, reboot, logs, deposit, destroy; or a ``path_prefix`` such as
  ``/api/v0/instances/<id>/``) and unlimited (``count`` null or ``"unlimited"``) until
  ``clear_faults`` (``POST /_sim/fault/clear``) takes it back.
- A fleet: any number of instances, each with its own id, GPU, $/h and the model its LLM
  serves (``SimInstance``; ``vastops sim --instance ID,gpu=NAME,dph=USD,model=NAME``, repeated,
  or ``--instances N``); the printed env file names them as ``VAST_INSTANCE_ID`` and
  ``VAST_INSTANCE_IDS``, and a billed past each (``--billing-history`` repeated). vastops reads
  them with the v1 list filtered to their ids (``{"id": {"in": [...]}}``, 25 a page).
- vast's market (``SimConfig.market``, eleven offers by default, ``SimOffer``): search offers
  filtered as vast filters (every ``{col: {op: value}}``, ``type``, ``order``, ``limit``,
  ``allocated_storage``); renting one (``PUT /asks/{id}/`` with vastai's create body: the
  ``new_contract`` and the instance's own key), the new instance's path null -> ``created`` ->
  ``loading`` (the image pull, ``pull_s``) -> ``running``, only its published ports (and 22)
  listening; refusals (the offer taken, too little credit, a disk too large, no image, an
  on-start over 16 KB) and a refused image whose pull fails (``exited``, docker's words); destroy.
- An instance's own key (``instance_api_key``, vast's CONTAINER_API_KEY): show, start/stop and
  reboot of that instance only.
- vast's auth edge (Caddy) on the published ports of a ``vastai/...`` image: 401 without
  credentials, placeholders (502 while nothing listens, 504 while the model loads, 200 through
  a Cloudflare tunnel, all with ``X-Portal-Placeholder: true``), and the service behind it.
- A dead vLLM engine (``kill_engine``): ``/health`` 503 with an empty body, completions 500,
  until the container restarts. vLLM's ``/metrics`` with its metric names.
- The instance's own agent (``SimConfig.run_agent``, ``vastops sim --agent``; off by default):
  each running container runs the real ``vastops agent`` as a child process with a
  container's env (``CONTAINER_ID``, ``CONTAINER_API_KEY``, ``VAST_API_URL``, the instance's
  env; ``VASTOPS_AGENT_PORT`` published as container port 8002; ``VASTOPS_AGENT_VLLM_URL`` the
  inner ``/_sim/vllm/<id>/metrics``), its output in the instance's log; it ends with its
  container (stop, crash, destroy, lost host, reboot, ``Simulator.stop()``). The call log's
  ``identity`` says whose key a call carried (``account``, ``instance <id>``), never the key.

Where it still differs from the real service (docs/vast-api.md §8 keeps the same list):
- Search offers lists the default (or configured) market plus the machines of the account's
  configured instances, one offer each of all their GPUs: ``rented`` while anyone holds them.
  Whether vast lists a stopped instance's released GPUs like this is a guess (§9). A search is
  rate limited at 1.0 s (burst 3): vast publishes no threshold; the simulator picked one.
- ``allocated_storage`` prices an offer as ``dph_base + storage_cost * GB / 720`` (5 GB when not
  given; unsure). ``type: "bid"`` shows ``min_bid`` as the price; a rental is always on-demand
  (``price`` in the create body is ignored); a configured instance's machine cannot be rented.
- The create refusals' codes and statuses are guesses: 404 ``no_such_ask`` (taken or unknown),
  400 ``insufficient_credit`` (credit below an hour of the offer), 400 ``invalid_args`` (no
  image, a disk over the offer's, an on-start over 16 KB, an env that is not an object); the
  destroy answers (200 with a ``msg``; 404 ``not_found`` "Instance not found") too. New ids count
  up from 24,000,001. Creation and destroy are not rate limited. The instance's own key may not
  destroy (vast's may: the instance-side facts, §5).
- The edge takes a Bearer token, basic auth and ``?token=``; no cookie, no redirect, no TLS. An
  OPEN_BUTTON_TOKEN shorter than 8 characters (a template's "1") counts as not given: vast's
  random one is used (``Simulator.edge_token``). Rebooting, frozen and lost-host ports answer
  502 placeholders (at vast the container, so Caddy, is down: the connection may be refused).
- The LLM answers as ``sim-model`` unless the instance serves a name of its own
  (``SimInstance.served_model``, or vLLM's ``--served-model-name`` in its env's ``VLLM_ARGS``);
  ``/metrics`` labels ``model_name`` with that name, else with the instance's model (env
  VLLM_MODEL, else ``SimInstance.model``); ``kv_cache_usage_perc`` is 4 % a running
  request; the latency histogram counts real seconds; its counters reset with the instance.
- No recycle, bulk PUT, volumes (but one volume contract in the charges), serverless, templates,
  ssh keys, teams, execute, copy or scheduled jobs: those paths answer 404 ``not_found``.
- The disk's stopped rate (default 1.5 x the running one) is a guess at vast's "typically
  higher"; so is when it applies: while the contract is stopped (``cur_state: "stopped"``: a
  stop's wind-down from the request on, stopped, a start still scheduling). The row's
  ``storage_total_cost`` (and ``dph_total``, the prices) shows the rate that applies now, the
  stopped one while stopped: a guess at what vast shows; ``storage_cost`` stays the running price.
  A rented instance's stopped rate is its offer's ``stopped_storage_cost`` ($/GB/month) if set.
- Contracts: the end date (``contract_days`` after the simulator made the contract, also for one
  with a billed past), vast's stop there and the words in ``status_msg`` ("Rental contract
  ended ..."), the refusal of a start (400 ``contract_ended``), deleting it 48 h after the end,
  all guesses; an end set in the past takes effect at once, a later one revives an ended
  contract. A pending price rise applies at the contract's end as if the user accepted it: the
  new rates from that instant (the stopped disk rate keeps its ratio to the running one), the end
  moves to the host's ask end (``ask_end_date``: the old end + 30 days, a guess), the rise leaves
  the list; a later rise replaces a pending one. The pending list is rate limited like a show
  (2.0 s, a guess); platform fees are always null.
- The volume is a fixed contract (``SimVolume``: 50 GB at $0.10/GB/month from the simulator's
  start) with only a disk item. A billed past was paid for: a credit invoice of its cost at its
  ``created_at`` keeps the account's credit unchanged. Charges are per contract over the queried
  range (not per day); item ``start``/``end`` are the first and last billed instants of that
  kind and rate in the range.
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
- The agent runs on the simulator's host, not in a container: started by the simulator (not
  by the on-start script, which never runs), on a free loopback port (not 8002), reading vLLM
  at ``/_sim/vllm/<id>/metrics`` (not 127.0.0.1:18000), from ``created`` to the end of
  ``stopping``; a lost host's container (and its agent) ends at once.
"""
