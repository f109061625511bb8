"""The simulator's own control routes under ``/_sim/`` (loopback only): its state, vast's web
console (start, stop, freeze, reboot, crash, destroy, a lost host, a dead engine), faults, the
key, run-time config, deposits, load that came by no gateway, an instance's own key, a host's
price rise, a contract's end date, a reset,
the texts ``request_logs`` hands out as ``result_url``, and vLLM's ``/metrics`` as the agent
reads it inside the container (``/_sim/vllm/<id>/metrics``, agents.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vastops.sim.agents import INNER_METRICS_PREFIX, inner_metrics

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

CONSOLE_ACTIONS = ("freeze", "reboot", "host_offline", "host_online", "destroy", "kill_engine")


def _err(code: str, msg: str) -> dict:
    return {"success": False, "error": code, "msg": msg}


def _instance(data: dict) -> int:
    """The instance a control body names: ``instance_id`` (as everywhere here) or ``instance``."""
    return int(data["instance_id"] if "instance_id" in data else data["instance"])


def control(sim: Simulator, method: str, target: str, raw: bytes, ip: str):
    if not (ip.startswith("127.") or ip == "::1"):
        return 403, _err("forbidden", "/_sim/ is loopback only")
    path = urlsplit(target).path.rstrip("/")
    if method == "GET" and path.startswith("/_sim/logs/"):
        token = path.removeprefix("/_sim/logs/").removesuffix(".log")
        with sim._lock:
            text = sim._logs.get(token)
        if text is None:
            return 404, "<Error><Code>NoSuchKey</Code></Error>", "application/xml"
        return 200, text, "text/plain; charset=utf-8"
    if method == "GET" and path.startswith(INNER_METRICS_PREFIX) and path.endswith("/metrics"):
        which = path.removeprefix(INNER_METRICS_PREFIX).removesuffix("/metrics")
        return inner_metrics(sim, int(which)) if which.isdigit() else (404, _err("not_found", f"no instance {which!r}"))
    try:
        data = json.loads(raw) if raw else {}
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        if (method, path) == ("GET", "/_sim/state"):
            return 200, sim.state()
        if method != "POST":
            return 404, _err("not_found", f"no control endpoint {method} {path}")
        if path == "/_sim/console":
            iid = int(data["instance_id"])
            action = data.get("action")
            if action is None:
                sim.console(iid, data["state"])
            elif action in CONSOLE_ACTIONS:
                getattr(sim, action)(iid)
            elif action == "crash":
                sim.crash(iid, data.get("msg"))
            else:
                raise ValueError(f"action must be one of {(*CONSOLE_ACTIONS, 'crash')}, not {action!r}")
        elif path == "/_sim/fault":
            keys = ("kind", "count", "method", "path_prefix", "delay_s", "value", "instance_id")
            sim.add_fault(**{k: data[k] for k in keys if k in data})
        elif path == "/_sim/fault/clear":  # all faults, or those of a path prefix or an instance
            gone = sim.clear_faults(data.get("path_prefix"), data.get("instance_id"))
            return 200, {"success": True, "cleared": gone}
        elif path == "/_sim/revoke_key":
            sim.revoke_key(str(data["new_key"]))
        elif path == "/_sim/config":
            sim.configure(**data)
        elif path == "/_sim/deposit":
            sim.deposit(data["amount"])
        elif path == "/_sim/load":
            sim.set_load(int(data["instance_id"]), int(data.get("running", 0)), int(data.get("waiting", 0)))
        elif path == "/_sim/instance_key":  # for a test or the demo playing the instance's own agent
            return 200, {"success": True, "instance_api_key": sim.instance_api_key(int(data["instance_id"]))}
        elif path == "/_sim/price_rise":
            fields = ("dph_base", "storage_total_cost", "inet_up_cost", "inet_down_cost")
            unknown = set(data) - {"instance_id", "instance", *fields}
            if unknown:
                raise ValueError(f"unknown price fields: {sorted(unknown)}")
            rise = sim.price_rise(_instance(data), **{k: data[k] for k in fields if k in data})
            return 200, {"success": True, "pending_price_increase_id": rise}
        elif path == "/_sim/contract_end":
            sim.set_contract_end(_instance(data), data["at"])
        elif path == "/_sim/reset":
            sim.reset()
        else:
            return 404, _err("not_found", f"no control endpoint {method} {path}")
    except (KeyError, TypeError, ValueError) as e:
        return 400, _err("invalid_args", str(e))
    return 200, {"success": True}
