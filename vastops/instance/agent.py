"""``vastops agent``: the instance watches itself. Standard library only: this very file runs on
the instance (the template's on-start script carries it, compressed), where nothing is installed.

Two jobs:

* **vLLM's own load.** Every second it reads vLLM's ``/metrics`` on the instance's loopback
  (``VASTOPS_AGENT_VLLM_URL``) and keeps the requests running and waiting now (summed over
  labels), when vLLM was last busy, and its token counters. The watchdog reads them with each
  lease: a request sent straight to vLLM (a notebook, a second gateway) is activity too.
* **A dead-man switch.** The watchdog gives it a lease with every heartbeat. While the lease
  holds, the agent does nothing. When it lapses (the watchdog's host or network is gone) the
  agent enforces the last lease by itself, with vLLM's load as the activity: it stops the
  instance once vLLM has had no running or waiting request for the idle limit (counted from
  the later of its last busy moment and the lease's last renewal; no earlier than the lease's
  keepalive), or at a hard stop, whichever comes first; never while a request runs or waits.
  Without any lease it enforces ``VAST_AUTO_SHUTDOWN_MINUTES``. While vLLM has never answered
  since the container started (the model downloads and loads) idle time does not count, up to
  ``VASTOPS_AGENT_BOOT_GRACE_MINUTES`` (default 45, at most 120). It stops with vast's own
  self-stop (``PUT $VAST_API_URL/api/v0/instances/$CONTAINER_ID/`` ``{"state": "stopped"}``,
  ``Authorization: Bearer $CONTAINER_API_KEY``; success is HTTP 200 and ``success: true``):
  429, 5xx and no answer are retried from 2 s doubling to 60 s, other refusals every 2 min.

HTTP, on ``VASTOPS_AGENT_PORT`` (8002), only with ``Authorization: Bearer $VASTOPS_AGENT_TOKEN``
(compared in constant time, never logged; else 401):

* ``POST /lease`` ``{"idle_minutes": 30, "lease_minutes": 10, "hard_stops": [["max_session",
  1767225600]], "keepalive_until": 1767222000 | null, "auto_shutdown": true}`` (minutes in
  (0, 10080]; a hard stop's cause is a word, its time epoch seconds; at most 20;
  ``auto_shutdown: false``: no idle stop, the hard stops only; other fields are ignored): 200
  with the state (below), the new lease in it; a bad body is 400 ``{"error": ...}``.
  ``busy_since_last_lease`` covers the time since the previous lease and is then reset.
* ``GET /state``: 200 ``{"running", "waiting", "busy", "busy_since_last_lease", "last_busy",
  "vllm_healthy_at", "vllm_seen_at", "tokens": {"vllm:prompt_tokens_total": n, ...},
  "lease_until", "stop_at", "stop_reason", "stopped_at", "started_at", "now"}`` (times are
  epoch seconds or null; ``stop_at`` is when the agent would stop if nothing changes).

Its log is stdout (vast's instance log), one line per decision: ``vastops-agent <ISO time>
<words>``. The last line of a self-stop has this exact form (``find_stop`` reads it back):

    vastops-agent 2026-08-01T12:40:00Z stopped instance 12345 at 2026-08-01T12:40:00Z cause=idle idle_minutes=30.2 lease_until=2026-08-01T12:20:00Z

(``cause`` is ``idle`` or a hard stop's cause; ``lease_until`` is ``none`` without a lease).
Its own bad input (no ``CONTAINER_ID``, a port in use, vLLM not answering, a bad lease) is
one line and a retry, never a crash.
"""

from __future__ import annotations

import calendar
import hmac
import http.server
import json
import math
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

BUSY_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
TOKEN_COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")
MAX_MINUTES = 10080.0  # a week: the settings' bound on every idle limit
MAX_GRACE_MINUTES = 120.0  # a boot that never answers cannot keep the GPU unguarded longer
STALE_S = 30.0  # a reading older than this is no longer load: a dead vLLM must not hold the GPU
RETRY_MAX_S = 60.0
REFUSED_RETRY_S = 120.0  # a refusal (a bad key, success: false) will not pass by itself soon
CONFIRM_S = 300.0  # still running this long after vast accepted the stop: stop again
CAUSE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
STOP_LINE = re.compile(r"stopped instance (\d+) at (\S+Z) cause=(\S+) idle_minutes=([\d.]+) lease_until=(\S+)")


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def log(message: str) -> None:
    print(f"vastops-agent {iso(time.time())} {message}", flush=True)


def find_stop(text: str) -> dict | None:
    """The agent's last self-stop line in an instance log: instance_id, stopped_at, cause,
    idle_minutes, lease_until (epoch seconds or None); None when there is none."""
    found = STOP_LINE.findall(text)
    if not found:
        return None
    ident, at, cause, idle, until = found[-1]
    try:
        return {
            "instance_id": int(ident),
            "stopped_at": _epoch(at),
            "cause": cause,
            "idle_minutes": float(idle),
            "lease_until": None if until == "none" else _epoch(until),
        }
    except ValueError:
        return None


def _epoch(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: each series we read, summed over its labels (model_name, engine).
    Comments, other series, timestamps, exemplars and non-finite values are skipped."""
    wanted = (*BUSY_GAUGES, *TOKEN_COUNTERS)
    sums: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        name = re.match(r"[^\s{]+", line)
        if not name or name.group() not in wanted:
            continue
        rest = line[name.end() :]
        if rest.startswith("{"):  # labels: quoted values may hold '}' or spaces
            quoted, i = False, 1
            while i < len(rest) and (quoted or rest[i] != "}"):
                quoted ^= rest[i] == '"'
                i += 2 if quoted and rest[i] == "\\" else 1
            rest = rest[i + 1 :]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):
            sums[name.group()] = sums.get(name.group(), 0.0) + value
    return sums


def _number(text: str | None, default: float, high: float, zero: bool = False) -> float:
    """A positive number from the environment (``zero``: or 0), at most ``high``; else ``default``."""
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return min(value, high) if math.isfinite(value) and (value > 0 or (zero and value == 0)) else default


class Agent:
    """The agent's state and decisions; ``clock`` is epoch seconds (injected by tests)."""

    def __init__(self, env: dict[str, str], clock: Callable[[], float] = time.time):
        self.clock = clock
        self.container_id = env.get("CONTAINER_ID", "").strip()
        self.key = env.get("CONTAINER_API_KEY", "").strip()
        self.api_url = (env.get("VAST_API_URL") or "https://console.vast.ai").rstrip("/")
        self.token = env.get("VASTOPS_AGENT_TOKEN", "").strip()
        self.vllm_url = env.get("VASTOPS_AGENT_VLLM_URL") or "http://127.0.0.1:18000/metrics"
        self.port = int(_number(env.get("VASTOPS_AGENT_PORT"), 8002, 65535))
        self.default_idle_s = _number(env.get("VAST_AUTO_SHUTDOWN_MINUTES"), 30, MAX_MINUTES) * 60
        self.grace_s = _number(env.get("VASTOPS_AGENT_BOOT_GRACE_MINUTES"), 45, MAX_GRACE_MINUTES, zero=True) * 60
        self.lock = threading.RLock()
        self.started = clock()
        self.running = self.waiting = 0
        self.tokens: dict[str, float] = {}
        self.healthy_at: float | None = None  # vLLM's first answer since the container started
        self.seen_at: float | None = None  # its latest answer
        self.last_busy: float | None = None
        self.busy_since_lease = False
        self.lease: dict | None = None  # idle_s, minutes, hard_stops [(cause, epoch)], keepalive, until
        self.lease_at: float | None = None
        self.lapsed = False
        self.stopping: str | None = None  # the decision being carried out
        self.stopped_at: float | None = None
        self.next_try = 0.0
        self.retry_s = 0.0
        self.said: set[str] = set()  # one line per kind of trouble, not one per second

    # -- vLLM's load ----------------------------------------------------------------------------

    def observe(self, sums: dict[str, float] | None) -> None:
        """One reading of vLLM's metrics (None: it did not answer)."""
        now = self.clock()
        with self.lock:
            if sums is None:
                return
            if self.healthy_at is None:
                self.healthy_at = now
                log("vLLM answers: idle time counts from now")
            self.seen_at = now
            self.running = round(sums.get(BUSY_GAUGES[0], 0.0))
            self.waiting = round(sums.get(BUSY_GAUGES[1], 0.0))
            self.tokens = {k: sums[k] for k in TOKEN_COUNTERS if k in sums}
            if self.running + self.waiting > 0:
                self.last_busy = now
                self.busy_since_lease = True

    def load(self, now: float) -> tuple[int, int]:
        """Requests running and waiting now; a reading older than ``STALE_S`` is no load."""
        fresh = self.seen_at is not None and now - self.seen_at <= STALE_S
        return (self.running, self.waiting) if fresh else (0, 0)

    def busy(self, now: float) -> bool:
        return sum(self.load(now)) > 0

    def plan(self, now: float) -> tuple[float, str, str, float] | None:
        """When the agent stops if nothing changes: (at, cause, why, idle minutes); None while
        vLLM is busy or when no stop is foreseen (a lease with ``auto_shutdown: false`` and no hard stop)."""
        with self.lock:
            if self.busy(now) or self.stopped_at is not None:
                return None
            lease = self.lease
            idle_s = lease["idle_s"] if lease else self.default_idle_s
            boot = min(self.healthy_at or math.inf, self.started + self.grace_s)  # the grace ends at vLLM's first answer
            since = max(t for t in (self.last_busy, self.lease_at, boot) if t is not None)
            idle_min = max(0.0, now - since) / 60
            at, cause, why = since + idle_s, "idle", f"idle {idle_min:.1f} min (limit {idle_s / 60:g})"
            if lease and not lease["auto_shutdown"]:
                at = math.inf
            elif lease and lease["keepalive"]:
                at = max(at, lease["keepalive"])
            for hard, t in lease["hard_stops"] if lease else []:
                if t < at:
                    at, cause, why = t, hard, f"{hard} at {iso(t)}"
            if at == math.inf:
                return None
            if lease:
                at = max(at, lease["until"])
                why += f"; the lease lapsed at {iso(lease['until'])}"
            else:
                why += "; no watchdog ever leased"
            return at, cause, why, idle_min

    def answer(self) -> dict:
        now = self.clock()
        with self.lock:
            plan = self.plan(now)
            return {
                "running": self.load(now)[0],
                "waiting": self.load(now)[1],
                "busy": self.busy(now),
                "busy_since_last_lease": self.busy_since_lease,
                "last_busy": self.last_busy,
                "vllm_healthy_at": self.healthy_at,
                "vllm_seen_at": self.seen_at,
                "tokens": dict(self.tokens),
                "lease_until": self.lease["until"] if self.lease else None,
                "stop_at": plan[0] if plan else None,
                "stop_reason": plan[2] if plan else None,
                "stopped_at": self.stopped_at,
                "started_at": self.started,
                "now": now,
            }

    def take_lease(self, body: object) -> dict:
        """A lease from the watchdog (see the module's docstring); ValueError names what is wrong."""
        if not isinstance(body, dict):
            raise ValueError("the lease is a JSON object")

        def number(value: object, name: str, high: float = MAX_MINUTES) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
                raise ValueError(f"{name} must be a number in (0, {high:g}]")
            return float(value)

        idle, minutes = number(body.get("idle_minutes"), "idle_minutes"), number(body.get("lease_minutes"), "lease_minutes")
        stops = body.get("hard_stops") or []
        if not isinstance(stops, list) or len(stops) > 20:
            raise ValueError("hard_stops must be a list of at most 20 [cause, epoch seconds]")
        hard = []
        for item in stops:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and CAUSE.fullmatch(item[0])):
                raise ValueError("each hard stop is [cause, epoch seconds], the cause a word")
            hard.append((item[0], number(item[1], "a hard stop's time", 1e11)))
        keepalive = None if body.get("keepalive_until") is None else number(body["keepalive_until"], "keepalive_until", 1e11)
        auto = body.get("auto_shutdown", True)
        if not isinstance(auto, bool):
            raise ValueError("auto_shutdown must be true or false")
        now = self.clock()
        with self.lock:
            old = self.lease
            self.lease = {
                "idle_s": idle * 60,
                "minutes": minutes,
                "hard_stops": hard,
                "keepalive": keepalive,
                "auto_shutdown": auto,
                "until": now + minutes * 60,
            }
            self.lease_at = now
            self.said.discard("lease")
            answer = self.answer()
            self.busy_since_lease = self.busy(now)
            if old is None or _terms(old) != _terms(self.lease):  # a change of terms is a decision; a renewal is not
                terms = ", ".join(f"{c} at {iso(t)}" for c, t in hard) or "no hard stop"
                kept = f", keepalive until {iso(keepalive)}" if keepalive else ""
                idle_words = f"idle {idle:g} min" if auto else "no idle stop"
                log(f"lease from the watchdog: {idle_words}, {terms}{kept}; it lapses {minutes:g} min after the last renewal")
        return answer

    # -- the dead-man switch --------------------------------------------------------------------

    def enforce(self, stop: Callable[[], tuple[str, str] | None] | None = None) -> None:
        """One look: stop the instance when the plan says so. ``stop()`` (default ``stop_call``)
        returns None on success, else (``"retry"`` or ``"refused"``, why)."""
        now = self.clock()
        with self.lock:
            if self.stopped_at is not None and now >= self.stopped_at + CONFIRM_S:
                log(f"still running {CONFIRM_S / 60:g} min after vast.ai accepted the stop: stopping again")
                self.stopped_at = None
            lapsed = self.lease is not None and now >= self.lease["until"]
            if lapsed != self.lapsed:
                self.lapsed = lapsed
                log("the lease lapsed: the watchdog is unreachable; enforcing its last lease" if lapsed else "the lease is renewed")
            plan = self.plan(now)
            if plan is None or plan[0] > now:
                if self.stopping is not None and self.stopped_at is None:
                    log(f"stop called off: {'vLLM is busy' if self.busy(now) else 'a lease came'}")
                    self.stopping, self.retry_s, self.next_try = None, 0.0, 0.0
                return
            if self.stopping is None:
                self.stopping = plan[2]
                log(f"stopping instance {self.container_id or '?'}: {plan[2]}")
            if now < self.next_try:
                return
        failure = (stop or self.stop_call)()
        now = self.clock()
        with self.lock:
            if failure is None:
                self.stopped_at, self.stopping, self.retry_s = now, None, 0.0
                until = iso(self.lease["until"]) if self.lease else "none"
                log(f"stopped instance {self.container_id} at {iso(now)} cause={plan[1]} idle_minutes={plan[3]:.1f} lease_until={until}")
            elif failure[0] == "retry":
                self.retry_s = min(RETRY_MAX_S, self.retry_s * 2 or 2.0)
                self.next_try = now + self.retry_s
                log(f"the stop failed ({failure[1]}); retrying in {self.retry_s:g} s")
            else:
                self.next_try = now + REFUSED_RETRY_S
                self.say_once(f"refused {failure[1]}", f"the stop was refused ({failure[1]}); retrying every {REFUSED_RETRY_S:g} s")

    def stop_call(self) -> tuple[str, str] | None:
        """vast's self-stop with the instance's own key; None on success (HTTP 200 and success: true)."""
        if not self.container_id or not self.key:
            return "refused", "CONTAINER_ID or CONTAINER_API_KEY is missing: vast sets both in every instance"
        request = urllib.request.Request(
            f"{self.api_url}/api/v0/instances/{self.container_id}/",
            data=b'{"state": "stopped"}',
            method="PUT",
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                status, body = response.status, json.loads(response.read(65536) or b"{}")
        except urllib.error.HTTPError as exc:
            kind = "retry" if exc.code == 429 or exc.code >= 500 else "refused"
            return kind, f"vast.ai answered {exc.code}{_said(exc)}"
        except (OSError, ValueError) as exc:
            return "retry", f"vast.ai unreachable or garbled ({type(exc).__name__})"
        if status != 200 or not isinstance(body, dict) or body.get("success") is not True:
            return "refused", f"vast.ai answered {status}{_said(body)}"
        return None

    # -- reading vLLM ---------------------------------------------------------------------------

    def read_vllm(self) -> dict[str, float] | None:
        try:
            with urllib.request.urlopen(self.vllm_url, timeout=5) as response:
                text = response.read(4_000_000).decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            self.say_once("vllm", f"vLLM's metrics do not answer at {self.vllm_url} ({type(exc).__name__}); trying every second")
            return None
        if "vllm" in self.said:
            self.said.discard("vllm")
            if self.healthy_at is not None:  # else observe says it: "vLLM answers"
                log("vLLM's metrics answer again")
        return parse_metrics(text)

    def say_once(self, kind: str, message: str) -> None:
        if kind not in self.said:
            self.said.add(kind)
            log(message)


def _terms(lease: dict) -> tuple:
    """A lease's terms, its times to the minute (a budget's projected stop drifts between heartbeats)."""
    minute = lambda t: None if t is None else round(t / 60)  # noqa: E731
    hard = [(c, minute(t)) for c, t in lease["hard_stops"]]
    return lease["idle_s"], lease["minutes"], hard, minute(lease["keepalive"]), lease["auto_shutdown"]


def _said(source: object) -> str:
    """What vast.ai said (its ``error`` and ``msg``), short; never a header or the request."""
    try:
        body = json.loads(source.read(4096)) if isinstance(source, urllib.error.HTTPError) else source
    except (OSError, ValueError):
        return ""
    words = [str(body.get(k))[:160] for k in ("error", "msg") if isinstance(body, dict) and body.get(k)]
    return f": {' '.join(words)}" if words else ""


def serve(agent: Agent, port: int | None = None, host: str = "0.0.0.0") -> http.server.ThreadingHTTPServer:
    """The agent's port (``port`` None: the agent's), served by a daemon thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # a caller that sends nothing does not hold a thread

        def _allowed(self) -> bool:
            given = self.headers.get("Authorization", "").encode("utf-8", "replace")
            if agent.token and hmac.compare_digest(given, f"Bearer {agent.token}".encode()):
                return True
            self._send(401, {"error": "unauthorized"})
            return False

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self._allowed():
                self._send(200, agent.answer()) if self.path == "/state" else self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            if not self._allowed():
                return
            if self.path != "/lease":
                self._send(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 <= length <= 65536:
                    raise ValueError("the body must be 0 to 65536 bytes")
                self._send(200, agent.take_lease(json.loads(self.rfile.read(length) or b"null")))
            except ValueError as exc:  # json's errors are ValueErrors too
                agent.say_once("lease", f"refused a bad lease: {exc}")  # once until a good one comes
                self._send(400, {"error": f"a bad lease: {exc}"})

        def log_message(self, *args: object) -> None:  # no access log: the instance's log is for decisions
            pass

    server = http.server.ThreadingHTTPServer((host, agent.port if port is None else port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="agent-http").start()
    return server


def main(env: dict[str, str] | None = None) -> int:
    """Run the agent until the process is killed (the container stops)."""
    agent = Agent(dict(os.environ if env is None else env))
    if not agent.token:
        log("VASTOPS_AGENT_TOKEN is not set: nobody can lease; the agent guards the instance on its own idle limit")
    if not agent.container_id or not agent.key:
        log("CONTAINER_ID or CONTAINER_API_KEY is missing: the agent cannot stop this instance (vast sets both)")
    log(
        f"watching vLLM at {agent.vllm_url}; idle limit {agent.default_idle_s / 60:g} min until a lease, boot grace {agent.grace_s / 60:g} min"
    )

    def read_forever() -> None:
        while True:
            try:
                agent.observe(agent.read_vllm())
            except Exception as exc:  # one bad reading is never the end of the guard
                agent.say_once("read", f"reading vLLM failed ({type(exc).__name__}: {exc}); trying every second")
            time.sleep(1.0)

    threading.Thread(target=read_forever, daemon=True, name="agent-vllm").start()
    server, bind_at = None, 0.0
    while True:
        if server is None and time.time() >= bind_at:  # a port in use: retried, while the switch keeps working
            try:
                server = serve(agent)
                log(f"listening on port {agent.port}")
            except OSError as exc:
                bind_at = time.time() + 10
                agent.say_once("port", f"cannot listen on port {agent.port} ({exc.strerror or exc}); retrying every 10 s")
        try:
            agent.enforce()
        except Exception as exc:
            agent.say_once("enforce", f"a look failed ({type(exc).__name__}: {exc}); trying every second")
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
