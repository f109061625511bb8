"""The instance's template: the body that creates it on vast.ai, built from the settings.

An ordinary vast instance is a Docker container with no Docker inside and no systemd
(docs/vast-api.md, "What runs on the instance"), so the seed's compose stack cannot run
there: the same result comes from a template: image, env (with the published ports),
disk, an on-start script and a launch mode. Two images are known:

* **vast's vLLM image** (``vastai/...``, the default): its supervisor starts vLLM
  (``VLLM_MODEL``, ``VLLM_ARGS``) on 127.0.0.1:18000 and its auth edge (Caddy) publishes
  it on the API port and again on the health port (``PORTAL_CONFIG``), so ``/health``
  on 8001 is vLLM's own /health behind the edge. The edge wants a token on every
  request: ``WEB_PASSWORD``, which vastops sends as ``Authorization: Bearer``
  (``VAST_HEALTH_TOKEN``). vast's supervisor also wants Ray's dashboard entry.
* **plain vLLM** (``vllm/vllm-openai``): no edge, no supervisor. The on-start script
  starts ``vllm serve`` on the API port (its ``/v1`` guarded by ``VLLM_API_KEY``, the
  same token) and, when the health port differs, a few lines of Python that answer
  ``/health`` there with vLLM's own.

With ``VASTOPS_AGENT_TOKEN`` set, both scripts also write the agent (``vastops agent``,
vastops/instance/agent.py) to ``/workspace/vastops-agent.py`` from a compressed copy of the
package's own file and start it once: it reads vLLM's ``/metrics`` on the loopback, answers
the watchdog's lease on ``VAST_AGENT_PORT`` (published directly, not through the edge: the
agent checks its own token), and stops the instance by itself when the lease lapses.

Either way the on-start script runs on every container start (so it is idempotent),
keeps the model cache on the container disk (``/workspace``, which survives a stop), is
under vast's 16 KB limit, and prints nothing secret. ``HF_TOKEN`` is never in the
template: it belongs in the account's environment variables (vast's console), which
reach every instance.
"""

from __future__ import annotations

import base64
import gzip
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vastops.config import Settings

ONSTART_LIMIT = 16 * 1024  # vast's limit on the on-start script, in bytes
VLLM_INNER_PORT = 18000  # where vast's image runs vLLM behind its edge
CACHE = "/workspace/huggingface"  # the container disk: survives stop/start, not destroy
TOKEN_SHOWN = "<VAST_HEALTH_TOKEN>"  # what a printed template shows instead of the token
AGENT_TOKEN_SHOWN = "<VASTOPS_AGENT_TOKEN>"
AGENT_SOURCE = Path(__file__).with_name("agent.py")  # the agent the on-start script carries
AGENT_PATH = "/workspace/vastops-agent.py"
LABEL = "vastops"


@dataclass(frozen=True)
class InstanceTemplate:
    """What the instance runs, from the settings (``VASTOPS_MODEL``, ``VASTOPS_IMAGE``, ...)."""

    model: str
    image: str
    api_port: int
    health_port: int
    vllm_args: str
    disk_gb: float
    token: str | None  # the edge's token (VAST_HEALTH_TOKEN); None: no token is set
    label: str = LABEL
    agent_token: str | None = None  # VASTOPS_AGENT_TOKEN; None: no agent on the instance
    agent_port: int = 8002
    idle_minutes: float = 30.0  # the agent's own idle limit until a watchdog leases (VAST_AUTO_SHUTDOWN_MINUTES)

    @classmethod
    def from_settings(cls, settings: Settings) -> InstanceTemplate:
        token = settings.vast_health_token.get_secret_value() if settings.vast_health_token else None
        return cls(
            model=settings.vastops_model,
            image=settings.vastops_image,
            api_port=settings.vast_endpoint_port or 8000,
            health_port=settings.vast_health_port,
            vllm_args=settings.vastops_vllm_args,
            disk_gb=settings.vastops_disk_gb,
            token=token,
            agent_token=settings.vastops_agent_token.get_secret_value() if settings.vastops_agent_token else None,
            agent_port=settings.vast_agent_port,
            idle_minutes=settings.vast_auto_shutdown_minutes,
        )

    @property
    def vast_image(self) -> bool:
        """vast's own images carry the supervisor and the auth edge."""
        return self.image.startswith(("vastai/", "docker.io/vastai/"))

    @property
    def ports(self) -> list[int]:
        own = [1111, 8265] if self.vast_image else []  # the instance portal; Ray's dashboard (vast's supervisor waits for Ray)
        agent = [self.agent_port] if self.agent_token else []
        return sorted({self.api_port, self.health_port, *own, *agent})

    def env(self, *, reveal: bool = False) -> dict[str, str]:
        """The instance's env, as the creation call takes it: ports as ``-p P:P`` keys."""
        token = self.token if reveal else (TOKEN_SHOWN if self.token else None)
        env = {f"-p {p}:{p}": "1" for p in self.ports}
        env["HF_HOME"] = CACHE
        if self.vast_image:
            portal = [
                "localhost:1111:11111:/:Instance Portal",
                f"localhost:{self.api_port}:{VLLM_INNER_PORT}:/docs:vLLM API",
                "localhost:8265:28265:/:Ray Dashboard",
            ]
            if self.health_port != self.api_port:
                portal.insert(2, f"localhost:{self.health_port}:{VLLM_INNER_PORT}:/health:vLLM health")
            env.update(
                {
                    "OPEN_BUTTON_PORT": "1111",
                    "OPEN_BUTTON_TOKEN": "1",  # vast generates the console's own token
                    "DATA_DIRECTORY": "/workspace/",
                    "PORTAL_CONFIG": "|".join(portal),
                    "RAY_ADDRESS": "127.0.0.1",
                    "VLLM_MODEL": self.model,
                    "VLLM_ARGS": f"{self.vllm_args} --download-dir /workspace/models --host 127.0.0.1 --port {VLLM_INNER_PORT}".strip(),
                }
            )
            if token:
                env["WEB_PASSWORD"] = token  # the edge's password: vastops sends it as a Bearer token
        else:
            env.update({"VLLM_MODEL": self.model, "VLLM_ARGS": self.vllm_args, "VASTOPS_API_PORT": str(self.api_port)})
            env["VASTOPS_HEALTH_PORT"] = str(self.health_port)
            if token:
                env["VLLM_API_KEY"] = token  # vLLM guards /v1 with it; /health stays open
        if self.agent_token:
            inner = VLLM_INNER_PORT if self.vast_image else self.api_port  # the loopback: past the edge
            env.update(
                {
                    "VASTOPS_AGENT_TOKEN": self.agent_token if reveal else AGENT_TOKEN_SHOWN,
                    "VASTOPS_AGENT_PORT": str(self.agent_port),
                    "VASTOPS_AGENT_VLLM_URL": f"http://127.0.0.1:{inner}/metrics",
                    "VAST_AUTO_SHUTDOWN_MINUTES": f"{self.idle_minutes:g}",
                }
            )
        return env

    def body(self, *, reveal: bool = False) -> dict[str, Any]:
        """What ``PUT /api/v0/asks/{offer}/`` takes (vastai's create payload). ``reveal``: the real token."""
        return {
            "image": self.image,
            "env": self.env(reveal=reveal),
            "disk": self.disk_gb,
            "onstart": self.onstart(),
            "runtype": "ssh",  # vast's launcher runs the on-start script (and provisions SSH for debugging)
            "label": self.label,
        }

    def onstart(self) -> str:
        agent = _agent_script() if self.agent_token else ""
        if self.vast_image:  # the agent starts before vast's boot replaces the script (exec)
            return _VAST_ONSTART.replace(_VAST_BOOT, agent + _VAST_BOOT)
        return _PLAIN_ONSTART + agent

    def summary(self) -> str:
        """The template in words: what to paste where in vast's console."""
        env = self.env()
        ports = " ".join(f"-p {p}:{p}" for p in self.ports)
        env_flags = " ".join(f"-e {k}={shlex.quote(v)}" for k, v in env.items() if not k.startswith("-p "))
        lines = [
            f"Template for {self.model} on {self.image}",
            "",
            "In vast's console (Templates > New template):",
            f"  Image:           {self.image}",
            f"  Docker options:  {ports} {env_flags}",
            "  Launch mode:     SSH (the on-start script below starts the services)",
            f"  Disk:            {self.disk_gb:g} GB (fixed at creation: the model cache lives there)",
            f"  On-start script: {len(self.onstart().encode())} bytes (limit {ONSTART_LIMIT}); print it with --onstart",
            "",
            f"Ports: {self.api_port} the LLM API (/v1/chat/completions), {self.health_port} /health.",
        ]
        if self.vast_image:
            lines.append(
                "vast's auth edge guards both: WEB_PASSWORD is the token vastops sends (Authorization: Bearer) as VAST_HEALTH_TOKEN."
            )
        else:
            lines.append("vLLM guards /v1 with VLLM_API_KEY (VAST_HEALTH_TOKEN); /health is open.")
        if not self.token:
            lines.append("No VAST_HEALTH_TOKEN is set: set one (openssl rand -hex 24) before creating the instance.")
        if self.agent_token:
            lines += [
                f"Port {self.agent_port}: the agent (vastops agent), published directly (it checks VASTOPS_AGENT_TOKEN itself,",
                "  shown as <VASTOPS_AGENT_TOKEN>): it reads vLLM's load for the watchdog, and stops the instance by itself",
                f"  when the watchdog's lease lapses (or after {self.idle_minutes:g} idle minutes if no watchdog ever leases).",
            ]
        else:
            lines.append("No VASTOPS_AGENT_TOKEN is set: no agent on the instance, so nothing stops it when the watchdog is gone.")
        lines += [
            f"The token is shown as {TOKEN_SHOWN}: use your VAST_HEALTH_TOKEN there (--reveal prints it).",
            "",
            "HF_TOKEN (the model is gated on Hugging Face) goes into your account's environment",
            "variables (vast's console: Account > Environment variables), never into a template.",
            "",
            "Then in .env: VAST_INSTANCE_ID=<the new id>, "
            f"VAST_ENDPOINT_PORT={self.api_port}, VAST_HEALTH_PORT={self.health_port}, VAST_HEALTH_TOKEN=<the token>"
            + (f", VAST_AGENT_PORT={self.agent_port}, VASTOPS_AGENT_TOKEN=<the agent's token>." if self.agent_token else "."),
        ]
        return "\n".join(lines)


def agent_copy() -> str:
    """The agent's file as the on-start script carries it: gzip (no timestamp, so the same file
    gives the same script), base64, in lines of 120."""
    packed = base64.b64encode(gzip.compress(AGENT_SOURCE.read_bytes(), 9, mtime=0)).decode()
    return "\n".join(textwrap.wrap(packed, 120))


def _agent_script() -> str:
    return _AGENT_ONSTART.replace("@COPY@", agent_copy())


# The agent's part of both scripts: write it from the copy, start it unless it runs (its pidfile
# names a live process whose command line is the agent: after a stop and start, pids are reused).
_AGENT_ONSTART = f"""# The agent (vastops agent): vLLM's load for the watchdog, and the dead-man switch that stops
# this instance when the watchdog's lease lapses. Its log is this script's output.
agent={AGENT_PATH}
agent_pid=/workspace/vastops-agent.pid
base64 -d <<'AGENT' | gzip -dc > "$agent.tmp" && mv "$agent.tmp" "$agent"
@COPY@
AGENT
if [ -f "$agent_pid" ] && grep -qa vastops-agent "/proc/$(cat "$agent_pid")/cmdline" 2>/dev/null; then
    echo "vastops: the agent runs already"
else
    echo "vastops: starting the agent on port ${{VASTOPS_AGENT_PORT:-8002}}"
    nohup python3 -u "$agent" &
    echo $! > "$agent_pid"
fi
"""


# On-start for vast's image: its own boot (entrypoint.sh) starts the supervisor, the edge and vLLM.
_VAST_ONSTART = f"""#!/bin/bash
# vastops on-start for vast's vLLM image. vast runs it on every container start, so it is
# idempotent; it prints nothing secret (no env dump, no set -x).
set -u
mkdir -p {CACHE} /workspace/models
# The model cache on the container disk: a stop and start finds the weights there.
if ! grep -q '^HF_HOME=' /etc/environment 2>/dev/null; then
    echo 'HF_HOME={CACHE}' >> /etc/environment
fi
export HF_HOME={CACHE}
if [ -z "${{HF_TOKEN:-}}" ]; then
    echo "vastops: HF_TOKEN is not set (vast's account env vars): a gated model will not download"
fi
echo "vastops: serving ${{VLLM_MODEL:-?}} behind vast's edge"
# vast's own boot: the supervisor starts Caddy (the edge), Ray and vLLM.
exec entrypoint.sh
"""
_VAST_BOOT = "# vast's own boot:"

# On-start for plain vLLM: vllm serve in the background (once), and /health on the health port.
_PLAIN_ONSTART = f"""#!/bin/bash
# vastops on-start for the plain vLLM image. vast runs it on every container start, so it
# is idempotent; it prints nothing secret (no env dump, no set -x).
set -u
mkdir -p {CACHE} /workspace/models /workspace/log
export HF_HOME={CACHE}
api_port="${{VASTOPS_API_PORT:-8000}}"
health_port="${{VASTOPS_HEALTH_PORT:-8001}}"
if [ -z "${{HF_TOKEN:-}}" ]; then
    echo "vastops: HF_TOKEN is not set (vast's account env vars): a gated model will not download"
fi
if ! pgrep -f "vllm serve" >/dev/null 2>&1; then
    echo "vastops: starting vllm serve ${{VLLM_MODEL:-?}} on port $api_port"
    # VLLM_ARGS is split into words on purpose (plain arguments; vastops checks them).
    # shellcheck disable=SC2086
    nohup vllm serve "${{VLLM_MODEL:?VLLM_MODEL is not set}}" ${{VLLM_ARGS:-}} \\
        --download-dir /workspace/models --host 0.0.0.0 --port "$api_port" \\
        >> /workspace/log/vllm.log 2>&1 &
fi
pidfile=/workspace/log/health.pid
if [ "$health_port" != "$api_port" ] && ! {{ [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }}; then
    echo "vastops: answering /health on port $health_port"
    nohup python3 - "$api_port" "$health_port" >> /workspace/log/health.log 2>&1 <<'PY' &
# GET /health on the health port answers with vLLM's own /health.
import http.server, sys, urllib.error, urllib.request
api, port = sys.argv[1], int(sys.argv[2])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            self.send_response(404); self.end_headers(); return
        try:
            code = urllib.request.urlopen("http://127.0.0.1:" + api + "/health", timeout=5).status
        except urllib.error.HTTPError as e:
            code = e.code
        except OSError:
            code = 502
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), Health).serve_forever()
PY
    echo $! > "$pidfile"
fi
"""
