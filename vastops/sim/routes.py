"""vast's REST API as the simulator answers it (§2, §4, §5): the routes and their bodies, the
key check (the bad-key status varies by endpoint; an instance's own key reaches that instance
only), per-endpoint rate limits, injected faults and the call log. The market's routes (search,
create, destroy) are in market.py, the simulator's own ``/_sim/`` routes in backstage.py."""

from __future__ import annotations

import functools
import json
import re
import secrets
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from vastops.sim import backstage, charges, contracts, logs, market, queries
from vastops.sim.config import to_bool
from vastops.sim.instance import InstanceState
from vastops.sim.rows import actual_status, instance_json
from vastops.sim.servers import Handler

if TYPE_CHECKING:
    from vastops.sim.world import Simulator

# §5, vast's OAS x-rate-limit (seconds between calls per endpoint and identity)
RATE_INTERVALS = {"show": 2.0, "put": 1.0, "reboot": 1.0, "list": 1.0, "charges": 1.0, "bundles": 1.0, "price_rises": 2.0}
# (search offers and pending price increases: vast publishes no threshold; 1.0 s and a show's
# 2.0 s are the simulator's picks)
INSTANCE_KEY_ROUTES = ("show", "put", "reboot")  # what an instance's own key may do, to that instance
BURST = 3
FAULT_KINDS = ("429", "500", "502", "503", "delay", "drop", "status")
# "status" leaves the HTTP answer alone: the next show answers report ``value`` as their
# actual_status (a host that missed a heartbeat reads "unknown"); the state is untouched.
QUEUED_MSG = (
    "Resources for this instance are currently unavailable (its GPU is rented by another client); "
    "the state change to running has been queued and happens once the GPU is free. Stop it to cancel."
)
LOG_URLS = 256  # result_url texts kept
MAX_INVOICES_LIMIT = 500

_ROUTES = [  # order matters: the bare v0 list must not be read as a show
    ("GET", re.compile(r"/api/v0/instances/?"), "v0_list"),
    ("GET", re.compile(r"/api/v0/instances/filters/?"), "filters"),
    ("GET", re.compile(r"/api/v0/instances/pending-price-increases/?"), "price_rises"),
    ("GET", re.compile(r"/api/v0/instances/(\d+)/?"), "show"),
    ("PUT", re.compile(r"/api/v0/instances/(\d+)/?"), "put"),
    ("PUT", re.compile(r"/api/v0/instances/reboot/(\d+)/?"), "reboot"),
    ("PUT", re.compile(r"/api/v0/instances/request_logs/(\d+)/?"), "logs"),
    ("GET", re.compile(r"/api/v0/instances/balance/(\d+)/?"), "deposit"),
    ("GET", re.compile(r"/api/v1/instances/?"), "list"),
    ("GET", re.compile(r"/api/v0/charges/?"), "charges"),
    ("GET", re.compile(r"/api/v1/invoices/?"), "invoices"),
    ("GET", re.compile(r"/api/v0/users/current/?"), "user"),
    ("POST", re.compile(r"/api/v0/bundles/?"), "bundles"),
    ("PUT", re.compile(r"/api/v0/asks/(\d+)/?"), "create"),
    ("DELETE", re.compile(r"/api/v0/instances/(\d+)/?"), "destroy"),
]
_INSTANCE_PATH = re.compile(r"/api/v0/instances/(?:reboot/|request_logs/|balance/)?(\d+)/?")
_BAD_KEY_STATUS = {"charges": 404, "invoices": 404}  # §2: the status varies by endpoint; 401 elsewhere
_FAULT_PAGES = {
    "500": "<html><body><h1>Server Error (500)</h1></body></html>",
    "502": "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    "503": "<html><head><title>503 Service Unavailable</title></head><body>503</body></html>",
}


def _err(code: str, msg: str) -> dict:
    return {"success": False, "error": code, "msg": msg}


class ApiHandler(Handler):
    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        sim = self.server.sim
        if urlsplit(self.path).path.startswith("/_sim/"):
            inner = backstage.control(sim, self.command, self.path, raw, self.client_address[0])
            if inner is None:  # the container's vLLM does not answer (agents.inner_metrics)
                self.close_connection = True
            else:
                self.reply(*inner)
            return
        answer = api(sim, self.command, self.path, raw, self.headers, self.client_address[0])
        if answer is None:  # "drop" fault: close without a status line
            self.close_connection = True
        else:
            self.reply(*answer)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _dispatch


def api(sim: Simulator, method: str, target: str, raw: bytes, headers, ip: str):
    """Answer one API call as (status, body[, content type]), or None to drop it."""
    split = urlsplit(target)
    query = parse_qs(split.query)
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = ValueError  # marks an unparseable body; logged as null
    auth = headers.get("Authorization", "")
    header_key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    query_key = query.get("api_key", [None])[0]
    entry = {
        "ts": sim.clock(),
        "method": method,
        "path": target,
        "status": None,
        "body": None if body is ValueError else body,
        "fault": None,
        "auth": "header+query" if header_key and query_key else "header" if header_key else "query" if query_key else None,
        "identity": None,
    }
    with sim._lock:
        entry["identity"] = identity(sim, header_key or query_key)
        sim._calls.append(entry)
        fault = take_fault(sim, method, split.path)
        entry["fault"] = fault and fault["kind"]
    if fault and fault["kind"] == "drop":
        return None
    if fault and fault["kind"] == "delay":
        time.sleep(fault["delay_s"])  # real time: the point is to make the client wait
    if fault and fault["kind"] in _FAULT_PAGES:
        answer = (int(fault["kind"]), _FAULT_PAGES[fault["kind"]], "text/html")
    elif fault and fault["kind"] == "429":
        answer = (429, "API requests too frequent: endpoint threshold=1.0", "text/plain")
    else:
        answer = vast_answer(sim, method, split.path, query, body, header_key or query_key, ip)
    with sim._lock:
        entry["status"] = answer[0]
    return answer


def identity(sim: Simulator, key: str | None) -> str | None:
    """Whose key a call carries, for the call log (never the key): ``account``, ``instance <id>``
    (its own key, CONTAINER_API_KEY), ``unknown``, or None (no key)."""
    if not key:
        return None
    if secrets.compare_digest(key.encode(), sim.config.api_key.encode()):
        return "account"
    for inst in sim._insts.values():
        if secrets.compare_digest(key.encode(), inst.api_key.encode()):
            return f"instance {inst.spec.id}"
    return "unknown"


def take_fault(sim: Simulator, method: str, path: str, *, status: bool = False) -> dict | None:
    """The first matching fault, consumed once (an unlimited one, ``count`` None, stays). ``status``
    faults are taken only where a show answer is built (``status=True``); every other kind before the answer."""
    for f in sim._faults:
        if (f["kind"] == "status") != status:
            continue
        if f.get("instance_id") is not None and path_instance(path) != f["instance_id"]:
            continue
        if f["method"] in (None, method) and (not f["path_prefix"] or path.startswith(f["path_prefix"])):
            if f["count"] is not None:
                f["count"] -= 1
                if f["count"] <= 0:
                    sim._faults.remove(f)
            return f
    return None


def path_instance(path: str) -> int | None:
    """The instance a call is about (show, state PUT, reboot, logs, deposit, destroy), or None."""
    match = _INSTANCE_PATH.fullmatch(path)
    return int(match.group(1)) if match else None


def vast_answer(sim: Simulator, method, path, query, body, key, ip):
    route, iid = None, None
    for m, pattern, name in _ROUTES:
        match = pattern.fullmatch(path)
        if m == method and match:
            route, iid = name, int(match.group(1)) if match.groups() else None
            break
    if route is None:
        return 404, _err("not_found", f"no endpoint {method} {path}")
    if route == "v0_list":
        return 410, _err("deprecated_endpoint", "use /api/v1/instances/")
    with sim._lock:
        now = sim._now()
        if not key:
            return 403, _err("auth_error", "This action requires login.")
        if key != sim.config.api_key and not instance_key_may(sim, key, route, iid, body):
            return _BAD_KEY_STATUS.get(route, 401), _err("auth_error", "Invalid user key")
        limited = rate_limit(sim, route, key, ip, now)
        if limited:
            return limited
        return _HANDLERS[route](sim, now, iid, query, body)


def instance_key_may(sim: Simulator, key: str, route: str, iid: int | None, body) -> bool:
    """An instance's own key (CONTAINER_API_KEY): show, start/stop and reboot of that instance only."""
    inst = live(sim, iid)
    if inst is None or route not in INSTANCE_KEY_ROUTES or not secrets.compare_digest(key.encode(), inst.api_key.encode()):
        return False
    return route != "put" or (isinstance(body, dict) and set(body) == {"state"})


def live(sim: Simulator, iid: int | None) -> InstanceState | None:
    """The instance with this id, unless it was destroyed (then vast knows it no more)."""
    inst = sim._insts.get(iid) if iid is not None else None
    return inst if inst is not None and inst.destroyed is None else None


def rate_limit(sim: Simulator, kind: str, key: str, ip: str, now: float):
    interval = RATE_INTERVALS.get(kind, 0.0) * sim.config.rate_limit_scale
    if interval <= 0:
        return None
    tokens, last = sim._buckets.get((kind, key, ip), (float(BURST), now))
    tokens = min(float(BURST), tokens + max(0.0, now - last) / interval)
    if tokens < 1.0:
        sim._buckets[(kind, key, ip)] = (tokens, now)
        text = f"API requests too frequent: endpoint threshold={round(interval, 6)}"
        return 429, text, "text/plain"
    sim._buckets[(kind, key, ip)] = (tokens - 1.0, now)
    return None


def _show(sim: Simulator, now, iid, query, body):
    inst = live(sim, iid)
    if inst is None:
        return 200, {"instances": None}
    answer = instance_json(sim, inst, now)
    fault = take_fault(sim, "GET", f"/api/v0/instances/{iid}/", status=True)
    if fault:  # what this answer says, not what the instance does
        answer["actual_status"] = fault["value"]
    return 200, {"instances": answer}


def _put(sim: Simulator, now, iid, query, body):
    inst = live(sim, iid)
    if inst is None:
        return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
    if not isinstance(body, dict) or not {"state", "label"} & body.keys():
        return 400, _err("invalid_args", 'body must be {"state": "running"|"stopped"} or {"label": str}')
    state, label = body.get("state"), body.get("label", inst.label)
    if "state" in body and state not in ("running", "stopped"):
        return 400, _err("invalid_args", f"state must be running or stopped, not {state!r}")
    if label is not None and not isinstance(label, str):
        return 400, _err("invalid_args", "label must be a string")
    if label is not None and len(label) > 1024:
        return 400, _err("label_too_long", "label must be at most 1024 characters")
    if state == "running" and inst.intended != "running" and sim._credit_out:
        return 400, _err("insufficient_credit", "Your account has no credit left: add credit before starting an instance.")
    refusal = contracts.ended_refusal(inst) if state == "running" else None
    if refusal:
        return 400, refusal
    inst.label = label
    if state == "running":
        if sim._start(inst, now, "api") and sim.config.queued_start_answer == "queued":
            return 200, {"success": False, "msg": QUEUED_MSG}
    elif state == "stopped":
        sim._stop(inst, now, "api")
    return 200, {"success": True}


def _reboot(sim: Simulator, now, iid, query, body):
    inst = live(sim, iid)
    if inst is None:
        return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
    refusal = sim._reboot(inst, now, "api")
    if refusal:
        return 400, _err("invalid_state", refusal)
    return 200, {"success": True}


def _logs(sim: Simulator, now, iid, query, body):
    inst = live(sim, iid)
    if inst is None:
        return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
    body = body if isinstance(body, dict) else {}
    lines = logs.log_lines(sim, inst, now)
    if to_bool(body.get("daemon_logs", False)):
        lines = [(ts, line) for ts, line in lines if line.startswith("[vast]")]
    if body.get("filter"):
        lines = [(ts, line) for ts, line in lines if str(body["filter"]) in line]
    if body.get("tail") not in (None, ""):
        try:
            tail = int(body["tail"])
        except (TypeError, ValueError):
            return 400, _err("invalid_args", f"tail must be a number of lines, not {body['tail']!r}")
        lines = lines[-tail:] if tail > 0 else []
    token = secrets.token_hex(12)
    sim._logs[token] = logs.text(lines)
    while len(sim._logs) > LOG_URLS:
        sim._logs.popitem(last=False)
    return 200, {"success": True, "result_url": f"{sim.url}/_sim/logs/{token}.log"}


def _deposit(sim: Simulator, now, iid, query, body):
    if live(sim, iid) is None:
        return 404, _err("no_such_instance", f"Instance {iid} not found or not yours")
    return 200, {"success": True, "refundable_deposit": 0.0, "total_discount": 0.0, "discount_months": 0}


def _filters(sim: Simulator, now, iid, query, body):
    combos: dict[tuple, int] = {}
    for inst in sim._insts.values():
        if inst.destroyed is not None:
            continue
        key = (actual_status(sim, inst, now), "verified", inst.spec.gpu_name)
        combos[key] = combos.get(key, 0) + 1
    filters = [{"actual_status": a, "verification": v, "gpu_name": g, "count": n} for (a, v, g), n in combos.items()]
    return 200, {"success": True, "filters": filters}


def _list(sim: Simulator, now, iid, query, body):
    filters = queries.arg(query, "select_filters", {}) or {}
    order = queries.arg(query, "order_by", None) or [{"col": "id", "dir": "asc"}]
    cols = queries.arg(query, "select_cols", None)
    if not isinstance(filters, dict):
        return 400, _err("invalid_args", 'select_filters must be a JSON object such as {"actual_status": {"eq": "running"}}')
    if isinstance(order, dict):
        order = [order]
    if not isinstance(order, list) or not all(isinstance(o, dict) and "col" in o for o in order):
        return 400, _err("invalid_args", 'order_by must be a list like [{"col": "id", "dir": "asc"}]')
    if cols is not None and not (isinstance(cols, list) and all(isinstance(c, str) for c in cols)):
        return 400, _err("invalid_args", "select_cols must be a list of column names")
    everyone = sorted((i for i in sim._insts.values() if i.destroyed is None), key=lambda i: i.spec.id)
    rows = [instance_json(sim, i, now) for i in everyone]
    try:
        for col, cond in filters.items():
            conds = cond if isinstance(cond, dict) else {"eq": cond}
            rows = [r for r in rows if all(queries.matches(r.get(col), op, want) for op, want in conds.items())]
        for o in reversed(order):  # stable sorts, last key first
            rows.sort(key=functools.partial(queries.sort_key, o["col"]))
            if str(o.get("dir", "asc")).lower() == "desc":
                rows.reverse()
        page, found, next_token = queries.page(rows, query, 25, 25)
    except (TypeError, ValueError) as e:
        return 400, _err("invalid_args", str(e))
    if cols is not None:
        page = [{c: r.get(c) for c in cols} for r in page]
    labels: dict[str, int] = {}
    for i in everyone:
        if i.label:
            labels[i.label] = labels.get(i.label, 0) + 1
    return 200, {
        "success": True,
        "instances": page,
        "instances_found": found,
        "total_instances": len(everyone),
        "label_counts": labels,
        "next_token": next_token,
    }


def _invoices(sim: Simulator, now, iid, query, body):
    filters = queries.arg(query, "select_filters")
    try:
        t0, t1 = queries.time_range(filters, "when")
    except (KeyError, TypeError, ValueError):  # vast answers a bad range with 200 and success: false (§4)
        return 200, _err("invalid_args", "select_filters needs a 'when' range with gte <= lte (epoch s)")
    try:
        wanted = queries.wanted(filters, "service", "stripe_payments")
    except ValueError as e:
        return 200, _err("invalid_args", str(e))
    results = []
    for inv in sim._invoices if wanted else []:
        if not t0 <= inv["when"] <= t1:
            continue
        results.append(
            {
                "start": inv["when"],
                "end": inv["paid_on"],
                "type": "credit",
                "source": "stripe",
                "description": f"Credit purchase of ${inv['amount']:.2f} from VISA ending in 4242 (simulated)",
                "amount": -inv["amount"],  # vast lists money paid in as negative
                "metadata": {"invoice_id": inv["id"], "service": "stripe_payments", "last4": "4242", "network": "visa"},
                "items": [],
            }
        )
    if to_bool(queries.arg(query, "latest_first", True)):
        results.reverse()
    try:
        page, total, next_token = queries.page(results, query, 100, MAX_INVOICES_LIMIT)
    except ValueError as e:
        return 200, _err("invalid_args", str(e))
    return 200, {"success": True, "count": len(page), "total": total, "results": page, "next_token": next_token}


def _user(sim: Simulator, now, iid, query, body):
    credit = sim._credit_left(now)
    return 200, {
        "id": 424242,
        "username": "vastops-sim",
        "email": "sim@vastops.invalid",
        "email_verified": True,
        "fullname": "vastops simulator",
        "balance": credit,
        "credit": credit,
        "balance_threshold": 5.0,
        "balance_threshold_enabled": False,
        "autobill_threshold": None,
        "billed_expected": 0.0,
        "billed_verified": 0.0,
        "paid_expected": 0.0,
        "paid_verified": 0.0,
        "billing_creditonly": 0,
        "can_pay": True,
        "has_billing": True,
        "has_payout": False,
        "got_signup_credit": False,
        "host_agreement_accepted": False,
        "last4": "4242",
        "password_resettable": True,
        "paypal_email": None,
        "billaddress_line1": None,
        "billaddress_line2": None,
        "billaddress_city": None,
        "billaddress_zip": None,
        "billaddress_country": None,
        "user": "vastops-sim",
        "ssh_key": "ssh-ed25519 AAAAsimulated vastops-sim",
    }


_HANDLERS = {
    "show": _show,
    "put": _put,
    "reboot": _reboot,
    "logs": _logs,
    "deposit": _deposit,
    "filters": _filters,
    "list": _list,
    "bundles": market.search,
    "create": market.create,
    "destroy": market.destroy_route,
    "charges": charges.route,
    "price_rises": contracts.pending_route,
    "invoices": _invoices,
    "user": _user,
}
