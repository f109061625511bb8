"""The agent on the simulated instance (``SimConfig.run_agent``, ``vastops sim --agent``): the
real ``vastops agent`` (vastops/instance/agent.py) as a child process of the simulator for each
running container, with the env vast and the template give it, its output in the instance's log.

* **When it runs.** A container runs from ``created`` through ``loading``/``running`` to the end
  of ``stopping``, and again from ``reloading`` after a reboot; each is a new container
  (``InstanceState.container``) with an agent of its own. It goes away with its container: a
  stop, a crash, a destroy, a lost host, a reboot, ``Simulator.stop()`` (SIGTERM, then SIGKILL;
  on Linux it also dies with the simulator's process). A frozen container's agent is paused
  (SIGSTOP) and resumed with it. The world is worked out lazily, so a thread of its own
  (``Agents``) works it out every tenth of a second and matches the agents to the containers.
* **Its env**, as in a container: the instance's env (the template's VASTOPS_AGENT_TOKEN,
  VAST_AUTO_SHUTDOWN_MINUTES, VASTOPS_AGENT_BOOT_GRACE_MINUTES, ...), and vast's
  ``CONTAINER_ID`` and ``CONTAINER_API_KEY`` (the instance's own key), ``VAST_API_URL`` (the
  simulator), ``VASTOPS_AGENT_PORT`` (a free loopback port: container port 8002's host port
  when the instance publishes 8002) and ``VASTOPS_AGENT_VLLM_URL``: ``/_sim/vllm/<id>/metrics``
  on the API port (loopback only, ``inner_metrics``), vLLM's ``/metrics`` as 127.0.0.1:18000
  answers it inside a real container: past vast's edge, no traffic billed.
* **Its output** (stdout and stderr), line by line, goes into the instance's log as the
  container's own output does: what ``request_logs`` serves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vastops.processes import free_port
from vastops.sim import metrics as simmetrics
from vastops.sim.containers import AGENT_CONTAINER_PORT, LLM_CONTAINER_PORT, METRICS_PATH, container_answer, healthy, server_up
from vastops.sim.instance import InstanceState

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

AGENT_COMMAND = (sys.executable, "-m", "vastops.instance.agent")
INNER_METRICS_PREFIX = "/_sim/vllm/"  # + "<instance id>/metrics"
# The phases a container runs in (its agent with it); "frozen": it is paused.
CONTAINER_PHASES = frozenset({"created", "loading", "running", "stopping", "reloading", "frozen"})
TERM_WAIT_S = 3.0  # SIGTERM, then SIGKILL after this long
TICK_S = 0.1
# Not from the simulator's own environment: a container has none of the operator's settings.
_HOST_ONLY = ("VAST_", "VASTOPS_", "CONTAINER_")
PR_SET_PDEATHSIG = 1


def inner_metrics_url(sim: Simulator, instance_id: int) -> str:
    """Where an instance's agent reads vLLM's ``/metrics`` (inside a real container: 127.0.0.1:18000)."""
    return f"{sim.url}{INNER_METRICS_PREFIX}{instance_id}/metrics"


def inner_metrics(sim: Simulator, instance_id: int) -> tuple | None:
    """What vLLM's ``/metrics`` answers inside the container, past vast's edge: what the LLM's
    container port answers (a dead engine's metrics; 503 while the model loads), or None (no
    answer: the connection closes) while the container or its model server is down."""
    with sim._lock:
        now = sim._now()
        inst = sim._insts.get(instance_id)
        if inst is None or inst.destroyed is not None or not server_up(sim, inst, now):
            return None
        srv = inst.listeners.get(LLM_CONTAINER_PORT) or next(
            (s for p, s in sorted(inst.listeners.items()) if p not in (22, AGENT_CONTAINER_PORT)), None
        )
    if srv is None:  # no port serves the LLM (an env that publishes none): vLLM still runs inside
        with sim._lock:
            if not healthy(sim, inst, sim._now()) and not inst.engine_dead:
                return 503, {"status": "unavailable"}  # as the container port answers while the model loads
            return 200, simmetrics.exposition(inst), simmetrics.CONTENT_TYPE
    answer = container_answer(sim, srv, "GET", METRICS_PATH, inner=True)
    return answer if isinstance(answer, tuple) else None


def agent_env(sim: Simulator, inst: InstanceState, port: int) -> dict[str, str]:
    """The agent's environment, as a container's: the instance's env and vast's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_ONLY) and k != "CONTROL_API_KEY"}
    env.update({k: v for k, v in inst.env.items() if not k.strip().startswith("-")})  # "-p 8000:8000" keys are ports
    env.update(
        CONTAINER_ID=str(inst.spec.id),
        CONTAINER_API_KEY=inst.api_key,
        VAST_API_URL=sim.url,
        VASTOPS_AGENT_PORT=str(port),
        VASTOPS_AGENT_VLLM_URL=inner_metrics_url(sim, inst.spec.id),
        PYTHONUNBUFFERED="1",
    )
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the agent gets SIGTERM when the thread that started it (the supervisor) is gone,
    # so even a simulator killed with SIGKILL leaves no agent behind.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


@dataclass
class Running:
    """One agent process and the container it belongs to."""

    inst: InstanceState
    container: int
    port: int
    proc: subprocess.Popen[str]
    paused: bool = False
    reader: threading.Thread | None = field(default=None, repr=False)


class Agents:
    """Keeps one agent process per running container of ``sim``, on a thread of its own."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.running: dict[int, Running] = {}  # instance id -> its container's agent
        self.wake = threading.Event()
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()  # one reconciliation at a time

    def start(self) -> None:
        self.done.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="vastops-sim-agents")
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread and every agent (the simulator stops)."""
        self.done.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        with self.lock:
            for iid in list(self.running):
                self._end(iid)

    def pid(self, instance_id: int) -> int | None:
        with self.lock:
            r = self.running.get(instance_id)
            return r.proc.pid if r is not None and r.proc.poll() is None else None

    def summary(self, inst: InstanceState) -> dict | None:
        """What ``/_sim/state`` tells of an instance's agent (never its env)."""
        r = self.running.get(inst.spec.id)
        if r is None or r.inst is not inst:
            return None
        code = r.proc.poll()
        return {"pid": r.proc.pid, "port": r.port, "running": code is None, "exit_code": code, "paused": r.paused}

    def _loop(self) -> None:
        while not self.done.is_set():
            try:
                self.reconcile()
            except Exception as exc:  # one bad pass must not leave the containers unwatched
                if self.sim.config.verbose:
                    print(f"vastops sim: agents: {exc!r}", file=sys.stderr)
            self.wake.wait(TICK_S)
            self.wake.clear()

    def reconcile(self) -> None:
        """Match the agents to the containers that run now: end the ones whose container is
        gone (or is another one now), start the missing ones, pause and resume with a freeze."""
        sim = self.sim
        with sim._lock:
            sim._now()  # the world worked out up to now: phases that ended by themselves
            want = {
                inst.spec.id: (inst, inst.container, inst.phase == "frozen")
                for inst in sim._insts.values()
                if sim._started and inst.destroyed is None and inst.offline_since is None and inst.phase in CONTAINER_PHASES
            }
        with self.lock:
            for iid, r in list(self.running.items()):
                wanted = want.get(iid)
                if wanted is None or wanted[0] is not r.inst or wanted[1] != r.container:
                    self._end(iid)
            for iid, (inst, container, frozen) in want.items():
                if self.done.is_set():
                    return
                known = self.running.get(iid)
                if known is None:
                    self._begin(inst, container)
                elif known.paused != frozen and known.proc.poll() is None:
                    known.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)
                    known.paused = frozen

    def _begin(self, inst: InstanceState, container: int) -> None:
        sim = self.sim
        with sim._lock:
            port = inst.host_ports.get(AGENT_CONTAINER_PORT) or free_port()
            env = agent_env(sim, inst, port)
        proc = subprocess.Popen(
            list(AGENT_COMMAND), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, errors="replace", close_fds=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # one prctl: nothing that could deadlock
        )  # fmt: skip
        r = Running(inst, container, port, proc)
        r.reader = threading.Thread(target=self._pump, args=(r,), daemon=True, name=f"vastops-sim-agent-{inst.spec.id}")
        r.reader.start()
        self.running[inst.spec.id] = r

    def _pump(self, r: Running) -> None:
        """The agent's output into the instance's log, as a container's own output goes there."""
        assert r.proc.stdout is not None
        for line in r.proc.stdout:
            text = line.rstrip("\n")
            if text:
                with self.sim._lock:
                    self.sim._log(r.inst, self.sim._now(), text)

    def _end(self, iid: int) -> None:
        r = self.running.pop(iid)
        if r.proc.poll() is None:
            r.proc.terminate()
            if r.paused:
                r.proc.send_signal(signal.SIGCONT)  # a paused process handles its SIGTERM once resumed
            try:
                r.proc.wait(TERM_WAIT_S)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        if r.reader is not None:
            r.reader.join(TERM_WAIT_S)
        if r.proc.stdout is not None:
            r.proc.stdout.close()
