"""The simulated world: the account and its instances, their phases and the paths between them
(§3, §6), per-second billing (§4), the credit they spend and the invoices that add to it, and
the Python-side control a test or the demo drives (vast's web console, faults, run-time config:
console.py, whose ``Console`` methods ``Simulator`` takes).

``Simulator`` is the one object: it holds the state and the lock; the API port's routes
(routes.py), the container ports (containers.py), the rows it shows (rows.py) and the log
(logs.py) are functions of it. Everything is worked out lazily from an injected clock
(``_now`` plays every timed change up to the current instant), so a test moves a fake clock
and sees transitions and billing with no sleeps.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, replace

from vastops.sim import containers, contracts, logs, market, rows
from vastops.sim.agents import Agents
from vastops.sim.billing import DISK, DISK_STOPPED, GPU, VolumeState
from vastops.sim.config import SimConfig, check_instances
from vastops.sim.console import CRASH_MSG, Console
from vastops.sim.instance import COMPUTE_PHASES, CONTAINERS, GB, INF, STOPPED_PHASES, InstanceState
from vastops.sim.routes import ApiHandler
from vastops.sim.servers import Server

__all__ = ["CRASH_MSG", "Simulator"]
CREDIT_MSG = "Instance stopped: your account's credit is exhausted; add credit to start it again"
CALL_LOG_SIZE = 10_000


class Simulator(Console):
    """The simulated vast.ai for one account: ``start()`` serves its API on ``config.host``:``config.port``
    (0: a free port, see ``url``); the public methods are vast's web console and the test's hands."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.time):
        self.config = replace(
            config, instances=list(config.instances), market=list(config.market), refused_images=list(config.refused_images)
        )
        check_instances(self.config.instances)
        self.clock = clock
        self._lock = threading.RLock()
        self._insts: dict[int, InstanceState] = {}
        self._next_id = self.config.first_contract
        self._faults: list[dict] = []
        self._calls: deque[dict] = deque(maxlen=CALL_LOG_SIZE)
        self._events: deque[dict] = deque(maxlen=CALL_LOG_SIZE)
        self._buckets: dict[tuple, tuple[float, float]] = {}
        self._servers: list[Server] = []
        self._started = False
        self._retiring: list[threading.Thread] = []
        self._logs: OrderedDict[str, str] = OrderedDict()  # request_logs token -> the text it serves
        self._t = -INF  # the world is worked out up to this instant
        self._deposits = 0.0
        self._credit_out = False  # vast stopped everything at zero credit; starts are refused
        self._invoices: list[dict] = []
        self._invoice_seq = 0
        self._volume: VolumeState | None = None  # the account's other contract (SimConfig.volume)
        self._agents = Agents(self) if self.config.run_agent else None  # the instance's own agent, per container
        self._init_world(clock())

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> Simulator:
        api = Server((self.config.host, self.config.port), ApiHandler, self)
        self._servers = [api]
        self._serve(api)
        with self._lock:  # the account and its instances begin when the simulator does
            self._started = True
            self._init_world(self.clock())
        if self._agents is not None:
            self._agents.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._started = False
        if self._agents is not None:  # no agent outlives its simulator
            self._agents.stop()
        with self._lock:
            for inst in self._insts.values():
                containers.retire_ports(self, inst)
        servers, self._servers = self._servers, []
        stoppers = [threading.Thread(target=s.shutdown) for s in servers]
        for t in stoppers:
            t.start()
        for t, s in zip(stoppers, servers):
            t.join()
            s.server_close()
        with self._lock:
            retiring, self._retiring = self._retiring, []
        for t in retiring:
            t.join()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, srv) -> None:
        # A short poll keeps stop() fast; shutdown() waits for the next poll.
        name = f"vastops-sim-{srv.server_address[1]}"
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=name).start()

    def _public_host(self) -> str:
        return "127.0.0.1" if self.config.host in ("", "0.0.0.0") else self.config.host

    @property
    def url(self) -> str:
        if not self._servers:
            raise RuntimeError("simulator not started")
        return f"http://{self._public_host()}:{self._servers[0].server_address[1]}"

    # --- Python-side control (vast's web console: no auth, no rate limit, no call log) --------
    def reset(self) -> None:
        """Every configured instance back to its initial state with fresh billing and credit (created
        ones are gone, destroyed ones back); faults, logs and buckets cleared. The current key and config are kept."""
        with self._lock:
            self._init_world(self.clock())
            self._faults.clear()
            self._calls.clear()
            self._events.clear()
            self._buckets.clear()
            self._logs.clear()

    def state(self) -> dict:
        with self._lock:
            now = self._now()
            return {
                "now": now,
                "url": self.url if self._servers else None,
                "config": _redacted(asdict(self.config)),
                "account": self._account(now),
                "instances": [rows.state_row(self, i, now) for i in self._insts.values()],
                "volume": self._volume.state_row(now) if self._volume is not None else None,
                "market": [market.state_row(self, o, now) for o in self.config.market],
                "faults": [dict(f) for f in self._faults],
                "events": list(self._events),
                "calls": [dict(c) for c in self._calls],
            }

    # --- the world ---------------------------------------------------------------------
    def _init_world(self, now: float) -> None:
        for inst in self._insts.values():
            containers.retire_ports(self, inst)
        self._deposits = 0.0
        self._credit_out = False
        self._invoices = []
        self._invoice_seq = 4_828_000
        self._volume = VolumeState(self.config.volume, now) if self.config.volume is not None else None
        self._insts = {s.id: InstanceState(s, i) for i, s in enumerate(self.config.instances)}
        self._next_id = max([self.config.first_contract - 1, *self._insts]) + 1
        for inst in self._insts.values():
            self._open_contract(inst, now)
            spec = inst.spec
            if spec.initial == "running":
                inst.intended, inst.health_from = "running", now - self.config.health_delay_s
                containers.open_ports(self, inst)
                self._enter(inst, "running", now)
            elif spec.initial == "creating":
                inst.intended = "running"
                self._log(inst, now, f"[vast] instance {spec.id} created on machine {inst.machine_id}")
                self._enter(inst, "creating", now, self.config.create_s)
            else:
                self._enter(inst, "stopped", now)
        self._t = now
        if self.config.credit > 0:
            self._add_invoice(now, self.config.credit)

    def _open_contract(self, inst: InstanceState, now: float) -> None:
        """A contract begins now (configured at start or reset, or rented): its end date, and the
        billed past ``SimConfig.billing_history`` gives it."""
        inst.init(now, self.config.contract_days)
        contracts.apply_history(self, inst, now)

    def _get(self, instance_id: int) -> InstanceState:
        if instance_id not in self._insts or self._insts[instance_id].destroyed is not None:
            raise KeyError(f"no such instance {instance_id}")
        return self._insts[instance_id]

    def _now(self) -> float:
        """The current instant, with the world worked out up to it (call with the lock held)."""
        now = max(self.clock(), self._t)
        self._advance(now)
        return now

    def _advance(self, now: float) -> None:
        """Play every timed change up to ``now`` in order: phase ends, contract ends (a price rise, a
        stop, a deletion) and the moment credit runs out."""
        t = self._t
        insts = list(self._insts.values())
        while True:
            t_event = min((min(i.until, contracts.next_at(i)) for i in insts), default=INF)
            t_zero = INF
            if not self._credit_out:
                left = self._credit_left(t)
                rate = self._burn_rate()
                if left <= 0:
                    t_zero = t
                elif rate > 0:
                    t_zero = t + left / rate * 3600
            t_next = max(t, min(t_event, t_zero))
            if t_next > now:
                break
            self._accrue(t, t_next)
            t = self._t = t_next
            if t_zero <= t_event:
                self._exhaust(t)
            else:
                for inst in insts:
                    if inst.until <= t:
                        self._step(inst, t)
                    if contracts.next_at(inst) <= t:
                        contracts.due(self, inst, t)
        self._accrue(t, now)
        self._t = now

    def _accrue(self, t0: float, t1: float) -> None:
        """Simulated traffic of running instances over [t0, t1] (traffic_*_gb_per_h)."""
        up_h, down_h = self.config.traffic_up_gb_per_h, self.config.traffic_down_gb_per_h
        if t1 <= t0 or not (up_h or down_h):
            return
        for inst in self._insts.values():
            if inst.phase == "running" and inst.offline_since is None:
                h = (t1 - t0) / 3600
                self._record_traffic(inst, t0, t1, up_h * h * GB, down_h * h * GB)

    def _record_traffic(self, inst: InstanceState, t0: float, t1: float, up: float, down: float) -> None:
        inst.meter.record_traffic(t0, t1, up, down, inst.rates.inet_up_cost, inst.rates.inet_down_cost)

    def _count_traffic(self, inst: InstanceState, sent: int, received: int) -> None:
        with self._lock:
            now = self._now()
            scale = self.config.traffic_scale
            self._record_traffic(inst, now, now, sent * scale, received * scale)

    def _burn_rate(self) -> float:
        """$/h the account is being billed at this moment."""
        rate = self._volume.meter.burn_rate() if self._volume is not None else 0.0
        for inst in self._insts.values():
            rate += inst.meter.burn_rate()
            if inst.phase == "running" and inst.offline_since is None:
                r = inst.rates
                rate += self.config.traffic_up_gb_per_h * r.inet_up_cost + self.config.traffic_down_gb_per_h * r.inet_down_cost
        return rate

    def _spent(self, now: float) -> float:
        volume = self._volume.meter.cost(now)["total"] if self._volume is not None else 0.0
        return volume + sum(i.cost(now)["total"] for i in self._insts.values())

    def _credit_left(self, now: float) -> float:
        return self.config.credit + self._deposits - self._spent(now)

    def _exhaust(self, t: float) -> None:
        """The account's credit reached zero: vast stops every instance (§4, §10)."""
        self._credit_out = True
        for inst in self._insts.values():
            if inst.intended != "stopped":
                self._stop(inst, t, "credit")
                inst.msg = CREDIT_MSG
                self._log(inst, t, f"[vast] {CREDIT_MSG}")

    def _account(self, now: float) -> dict:
        return {
            "credit": self._credit_left(now),
            "spent": self._spent(now),
            "deposits": self._deposits,
            "credit_exhausted": self._credit_out,
            "burn_rate": self._burn_rate(),
        }

    def _add_invoice(self, now: float, amount: float) -> None:
        self._invoice_seq += 1
        self._invoices.append({"id": self._invoice_seq, "when": now, "paid_on": now, "amount": amount})
        self._invoices.sort(key=lambda i: i["when"])  # a billed past's payment comes before the others

    # --- phases ------------------------------------------------------------------------
    def _enter(self, inst: InstanceState, phase: str, t: float, duration: float = INF) -> None:
        if phase in ("created", "rebooting"):  # the container (re)starts: a dead engine is new again
            inst.engine_dead = False
        if phase in ("created", "reloading"):  # a new container: a new agent in it (agents.py)
            inst.container = next(CONTAINERS)
        if self._agents is not None:
            self._agents.wake.set()
        inst.phase, inst.until = phase, t + duration
        self._sync_billing(inst, t)
        logs.log_phase(self, inst, phase, t)

    def _sync_billing(self, inst: InstanceState, t: float) -> None:
        """What the instance bills from ``t`` on, at its rates now: compute in the billed phases, the
        disk while it exists and its host is online (at the stopped rate while the contract is stopped)."""
        online = inst.offline_since is None and inst.destroyed is None
        r, m = inst.rates, inst.meter
        m.bill("compute", t, GPU if online and inst.phase in COMPUTE_PHASES else None, r.dph_base)
        if not online:
            m.bill("storage", t, None)
        elif inst.phase in STOPPED_PHASES:
            m.bill("storage", t, DISK_STOPPED, r.storage_stopped_cost)
        else:
            m.bill("storage", t, DISK, r.storage_total_cost)

    def _step(self, inst: InstanceState, t: float) -> None:
        """The current phase has run its time: on to the next."""
        ph, c = inst.phase, self.config
        if ph in ("creating", "scheduling"):
            containers.open_ports(self, inst)
            self._enter(inst, "created", t, c.created_s if ph == "creating" else inst.created_len)
        elif ph == "created":
            self._enter(inst, "loading", t, c.load_s if inst.pulled else c.pull_s)
        elif ph == "rebooting":
            self._enter(inst, "reloading", t, c.load_s if inst.pulled else c.pull_s)
        elif ph in ("loading", "reloading") and not inst.pulled and market.refused(self, inst.spec.image):
            self._pull_failed(inst, t)
        elif ph in ("loading", "reloading"):
            inst.pulled = True
            inst.health_from, inst.health_logged = t, False
            self._enter(inst, "running", t)
        elif ph == "stopping":
            logs.flush_health_lines(self, inst, t)
            containers.retire_ports(self, inst)
            self._log(inst, t, "[vast] container stopped")
            self._enter(inst, "stopped", t)
        else:
            inst.until = INF

    def _pull_failed(self, inst: InstanceState, t: float) -> None:
        """The registry refused the image: the container never starts (exited, not billed)."""
        inst.msg = market.pull_denied(inst.spec.image)
        self._log(inst, t, inst.msg)
        self._enter(inst, "crashed", t)
        containers.retire_ports(self, inst)
        self._event(inst, t, "crashed", "pull")

    def _gpu_free_at(self, t: float) -> float:
        wait = -1.0 if self.config.stall_scheduling else self.config.gpu_free_after_s
        return INF if wait < 0 else t + wait

    def _schedule(self, inst: InstanceState, t: float) -> bool:
        """(Re)compute when a start in scheduling ends; True when it waits for a taken GPU."""
        gpu_at = inst.gpu_at = self._gpu_free_at(t)
        first = inst.start_req + self.config.schedule_s - inst.created_len  # scheduling's own share of the start
        inst.until = max(t, gpu_at, first)
        return gpu_at > t

    def _queue(self, inst: InstanceState, t: float) -> bool:
        """A start from stopped: scheduling, waiting for the GPU when it is taken."""
        inst.start_req, inst.msg = t, None
        inst.created_len = min(self.config.created_s, self.config.schedule_s)
        self._enter(inst, "scheduling", t)
        waits = self._schedule(inst, t)
        if waits:
            self._log(
                inst,
                t,
                f"[vast] scheduling: the GPU of machine {inst.machine_id} is rented by another client; the start waits until it is free",
            )
        return waits

    def _start(self, inst: InstanceState, t: float, source: str) -> bool:
        """A start request; True when it was queued for a GPU that is taken."""
        ph = inst.phase
        if inst.offline_since is not None:  # applied when the host is back
            if inst.intended != "running":
                inst.intended = "running"
                if ph in ("stopped", "stopping"):
                    inst.phase = "scheduling"
                self._event(inst, t, "running", source)
            return False
        queued = False
        if ph in ("stopped", "stopping"):
            if ph == "stopping":  # the container winding down is gone: the start begins afresh
                logs.flush_health_lines(self, inst, t)
                containers.retire_ports(self, inst)
            inst.intended = "running"
            self._log(inst, t, f"[vast] start requested ({source})")
            queued = self._queue(inst, t)
        elif ph == "frozen":
            inst.intended = "running"
            self._enter(inst, "running", t)
        elif ph == "crashed":  # its container is started again; the GPU is still held
            inst.msg = None
            containers.open_ports(self, inst)
            self._enter(inst, "created", t, self.config.created_s)
        else:
            return False  # already running or on its way: a harmless no-op
        self._event(inst, t, "running", source)
        return queued

    def _stop(self, inst: InstanceState, t: float, source: str) -> None:
        ph = inst.phase
        if inst.intended == "stopped" and ph in ("stopped", "stopping"):
            return  # stop while stopped: a no-op
        inst.intended, inst.msg = "stopped", None
        if inst.offline_since is not None:
            inst.phase, inst.until = "stopped", INF
        elif ph in COMPUTE_PHASES:  # compute ends at the request; the container winds down for stop_s
            self._enter(inst, "stopping", t, self.config.stop_s)
        else:  # a start still on its way, or a crashed container: cancelled at once
            logs.flush_health_lines(self, inst, t)
            containers.retire_ports(self, inst)
            self._enter(inst, "stopped", t)
        self._log(inst, t, f"[vast] stop requested ({source})")
        self._event(inst, t, "stopped", source)

    def _reboot(self, inst: InstanceState, t: float, source: str) -> str | None:
        """A reboot; the refusal's text when the instance has no container to reboot."""
        ph = inst.phase
        if inst.offline_since is not None or ph not in ("running", "frozen", "crashed", "rebooting", "reloading"):
            return f"instance {inst.spec.id} is not running ({inst.intended}); start it instead"
        if ph in ("rebooting", "reloading"):
            return None
        logs.flush_health_lines(self, inst, t)
        if ph == "crashed":
            containers.open_ports(self, inst)
        inst.intended, inst.msg, inst.health_from = "running", None, None
        self._log(inst, t, f"[vast] reboot requested ({source}): restarting the container")
        self._enter(inst, "rebooting", t, self.config.reboot_s)
        self._event(inst, t, "rebooting", source)
        return None

    def _freeze(self, inst: InstanceState, t: float) -> None:
        if inst.offline_since is not None or inst.phase != "running":
            raise ValueError(f"only a running instance can be frozen; {inst.spec.id} is {inst.phase}")
        inst.intended = "frozen"
        self._enter(inst, "frozen", t)
        self._event(inst, t, "frozen", "console")

    def _event(self, inst: InstanceState, t: float, state: str, source: str) -> None:
        self._events.append({"ts": t, "instance_id": inst.spec.id, "state": state, "source": source})

    # --- the log (what goes in it: logs.py) ----------------------------------------------
    def _log(self, inst: InstanceState, t: float, line: str) -> None:
        inst.log.append((t, line))


SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


def _redacted(config: dict) -> dict:
    """The config as /_sim/state shows it: an env's secrets (WEB_PASSWORD, OPEN_BUTTON_TOKEN,
    HF_TOKEN, ...) only as set, never their values."""
    for spec in config["instances"]:
        if spec.get("env"):
            spec["env"] = {k: ("***" if any(w in k.upper() for w in SECRET_WORDS) else v) for k, v in spec["env"].items()}
    return config
