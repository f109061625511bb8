"""The simulator's Python-side control: what vast's web console does (start, stop, freeze, reboot,
destroy), what the world does to an instance (a crash, a lost host, a dead engine, load that
came by no gateway, a host's price rise, the contract's end date), faults, the key, run-time
config, deposits, creation without the API, and the secrets a test needs (an instance's own
key, the edge's token). No auth, no rate limit, no call log. ``Simulator`` (world.py) takes
these methods from ``Console``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from vastops.sim import containers, contracts, edge, logs, market
from vastops.sim.config import checked_changes, instant
from vastops.sim.instance import INF
from vastops.sim.routes import FAULT_KINDS

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

CRASH_MSG = "Error: container exited unexpectedly with code 137 (the process was killed)"


class Console:
    def console(self, instance_id: int, state: str) -> None:
        """A start, stop or freeze made in vast's own web console."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        if state not in ("running", "stopped", "frozen"):
            raise ValueError(f"state must be 'running', 'stopped' or 'frozen', not {state!r}")
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            if state == "frozen":
                sim._freeze(inst, now)
            elif state == "running":
                refusal = contracts.ended_refusal(inst)
                if refusal:
                    raise ValueError(refusal["msg"])
                sim._start(inst, now, "console")
            else:
                sim._stop(inst, now, "console")

    def freeze(self, instance_id: int) -> None:
        """Pause a running container with its memory: intended and actual ``frozen``, compute billed."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        sim.console(instance_id, "frozen")

    def reboot(self, instance_id: int) -> None:
        """A reboot from the console: ``rebooting`` for reboot_s, loading, running; billed throughout."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            refusal = sim._reboot(inst, now, "console")
            if refusal:
                raise ValueError(refusal)

    def crash(self, instance_id: int, msg: str | None = None) -> None:
        """The container dies: actual ``exited`` with ``msg`` (an error) in status_msg; intended stays running."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            if inst.offline_since is not None or inst.phase not in ("created", "loading", "running", "reloading", "rebooting", "frozen"):
                raise ValueError(f"instance {instance_id} has no container to crash ({inst.phase})")
            logs.flush_health_lines(sim, inst, now)
            inst.intended, inst.msg = "running", msg or CRASH_MSG
            sim._enter(inst, "crashed", now)
            containers.retire_ports(sim, inst)
            sim._log(inst, now, f"[vast] container exited: {inst.msg}")
            sim._event(inst, now, "crashed", "console")

    def host_offline(self, instance_id: int) -> None:
        """The host stops reporting: ``unknown`` for offline_after_s, then ``offline``; nothing is billed."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            if inst.offline_since is not None:
                return
            logs.flush_health_lines(sim, inst, now)
            inst.offline_since, inst.until = now, INF
            containers.retire_ports(sim, inst)
            sim._sync_billing(inst, now)
            sim._log(inst, now, "[vast] lost contact with the host")
            sim._event(inst, now, "host_offline", "console")

    def host_online(self, instance_id: int) -> None:
        """The host is back: a stopped instance stays stopped; one that should run starts again."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            if inst.offline_since is None:
                return
            inst.offline_since = None
            sim._log(inst, now, "[vast] the host is back online")
            if inst.intended == "stopped" or inst.phase in ("stopped", "stopping"):
                sim._enter(inst, "stopped", now)
            elif inst.phase == "scheduling":
                sim._queue(inst, now)
            elif inst.phase == "creating":
                sim._enter(inst, "creating", now, sim.config.create_s)
            elif inst.intended == "frozen":
                containers.open_ports(sim, inst)
                sim._enter(inst, "frozen", now)
            else:
                containers.open_ports(sim, inst)
                inst.health_from = None
                sim._enter(inst, "created", now, sim.config.created_s)
            sim._event(inst, now, "host_online", "console")

    def price_rise(
        self,
        instance_id: int,
        dph_base: float | None = None,
        storage_total_cost: float | None = None,
        inet_up_cost: float | None = None,
        inet_down_cost: float | None = None,
    ) -> int:
        """The host raises its prices ($/h compute, $/h disk while running, $/GB; None: unchanged):
        listed as pending until the contract's end date, applied there (as if accepted: the new
        rates from that instant, the contract on to the host's new end). Its pending id."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        changes = {
            "dph_base": dph_base,
            "storage_total_cost": storage_total_cost,
            "inet_up_cost": inet_up_cost,
            "inet_down_cost": inet_down_cost,
        }
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            return contracts.add_rise(sim, inst, now, changes).id

    def set_contract_end(self, instance_id: int, at: float) -> None:
        """Move the contract's end date to ``at`` (epoch s): there a pending rise applies, or vast
        stops the instance for good. An end in the past takes effect now; a later one revives an
        ended contract (still stopped, it may be started again)."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        at = instant(at)
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            contracts.set_end(sim, inst, at, now)
            sim._now()  # an end that has come already plays out now

    def deposit(self, amount: float) -> None:
        """Credit bought by card: added to the account, listed as a ``credit`` invoice."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        amount = float(amount)
        if not amount > 0:
            raise ValueError("amount must be > 0")
        with sim._lock:
            now = sim._now()
            sim._deposits += amount
            sim._add_invoice(now, amount)
            if sim._credit_left(now) > 0:
                sim._credit_out = False

    def write_log(self, instance_id: int, lines: list[str]) -> None:
        """Lines the container prints now (a test's own output), added to the instance's log."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            for line in lines:
                sim._log(inst, now, str(line))

    def log_text(self, instance_id: int) -> str:
        """The instance's whole log, as request_logs would serve it."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            return logs.text(logs.log_lines(sim, inst, now))

    def add_fault(
        self,
        kind,
        count: int | str | None = 1,
        method: str | None = None,
        path_prefix: str | None = None,
        delay_s: float = 0.0,
        value: str | None = None,
        instance_id: int | None = None,
    ) -> None:
        """Make the next ``count`` matching calls fail as ``kind`` says; ``count`` None (or
        ``"unlimited"``): every matching call until ``clear_faults``.

        ``instance_id``: only the calls about that instance (its show, state PUT, reboot, logs,
        deposit, destroy: a fault of one instance of a fleet; the list call is not one of them).

        ``kind="status"`` needs ``value``: the next ``count`` show answers (GET
        /api/v0/instances/ID/ that reach an instance: not a 429, not an auth error) carry
        ``actual_status: value``; the instance's real state and billing do not change.
        """
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, not {kind!r}")
        times = None if count is None or count == "unlimited" else int(count)
        if (times is not None and times < 1) or float(delay_s) < 0:
            raise ValueError('count must be >= 1 (or null, "unlimited") and delay_s >= 0')
        if kind == "status" and not (isinstance(value, str) and value):
            raise ValueError('a "status" fault needs a value: the actual_status to report, e.g. "unknown"')
        with sim._lock:
            sim._faults.append(
                {
                    "kind": kind,
                    "count": times,
                    "method": method.upper() if method else None,
                    "path_prefix": path_prefix,
                    "instance_id": None if instance_id is None else int(instance_id),
                    "delay_s": float(delay_s),
                    "value": value if kind == "status" else None,
                }
            )

    def clear_faults(self, path_prefix: str | None = None, instance_id: int | None = None) -> int:
        """Take back the faults (all, or those of that path prefix or instance); how many went."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            kept = [
                f
                for f in sim._faults
                if (path_prefix is not None and f["path_prefix"] != path_prefix)
                or (instance_id is not None and f["instance_id"] != int(instance_id))
            ]
            gone = len(sim._faults) - len(kept)
            sim._faults[:] = kept
            return gone

    def revoke_key(self, new_key: str) -> None:
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            sim.config.api_key = new_key

    def configure(self, **changes) -> None:
        """Change timings and switches at run time. Durations apply to the next phase that
        starts; health_delay_s and health_never at once; gpu_free_after_s and stall_scheduling
        also to a start already waiting for its GPU (0: it gets the GPU now; N: N s from now)."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        coerced = checked_changes(changes)
        with sim._lock:
            now = sim._now()
            for k, v in coerced.items():
                setattr(sim.config, k, v)
            if {"gpu_free_after_s", "stall_scheduling"} & coerced.keys():
                for inst in sim._insts.values():
                    if inst.phase == "scheduling" and inst.offline_since is None:
                        sim._schedule(inst, now)
            if "credit" in coerced and sim._credit_left(now) > 0:
                sim._credit_out = False

    def destroy(self, instance_id: int) -> None:
        """Destroy from vast's console: ports gone, billing ended, the machine offered again; the
        charges keep the time it existed."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            market.destroy(sim, inst, now, "console")

    def kill_engine(self, instance_id: int) -> None:
        """vLLM's engine dies (EngineDeadError): /health answers 503, completions 500, until the
        container restarts (reboot, stop and start, a crash's restart)."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            inst, now = sim._get(instance_id), sim._now()
            if inst.offline_since is not None or inst.phase not in ("running", "stopping"):
                raise ValueError(f"instance {instance_id} has no model server running ({inst.phase})")
            if inst.engine_dead:
                return
            logs.flush_health_lines(sim, inst, now)
            inst.engine_dead = True
            for line in logs.ENGINE_DEAD_LINES:
                sim._log(inst, now, line)
            sim._event(inst, now, "engine_dead", "console")

    def set_load(self, instance_id: int, running: int = 0, waiting: int = 0) -> None:
        """Requests that came by no gateway (vllm:num_requests_running and _waiting add them)."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        if int(running) < 0 or int(waiting) < 0:
            raise ValueError("running and waiting must be >= 0")
        with sim._lock:
            sim._get(instance_id).extra_load = (int(running), int(waiting))

    def create(self, offer_id: int, body: dict) -> dict:
        """Rent a market offer as ``PUT /api/v0/asks/{offer_id}/`` does (no key, no rate limit);
        vast's answer, or ValueError with its refusal."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            status, answer = market.create(sim, sim._now(), int(offer_id), {}, body)
        if status != 200:
            raise ValueError(f"{answer['error']}: {answer['msg']}")
        return answer

    def instance_api_key(self, instance_id: int) -> str:
        """The instance's own key (vast's CONTAINER_API_KEY): it may show, start, stop and reboot that instance only."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            return sim._get(instance_id).api_key

    def edge_token(self, instance_id: int) -> str:
        """The OPEN_BUTTON_TOKEN vast's edge accepts for the instance (the env's, or the one vast generated)."""
        sim = cast("Simulator", self)  # a mixin of the one Simulator
        with sim._lock:
            return edge.open_button_token(sim._get(instance_id))
