"""The vast.ai client: the one place that knows vast's paths and field names.

Facts behind each choice are in docs/vast-api.md:

* The key travels only in ``Authorization: Bearer`` (older clients leaked it into
  URLs through ``?api_key=``). Error messages and logs never contain it.
* Every call has a timeout; ``requests`` has none by default.
* Success means a 2xx *and* no ``"success": false`` in the body.
* Errors are classified from the body, because vast answers a bad key with 401,
  403 or 404 depending on the endpoint; an unknown id is a 200 with
  ``{"instances": null}`` on GET and a 404 ``no_such_instance`` on PUT.
* 429s carry no ``Retry-After``, so backoff is exponential with jitter and honours
  the header only when it is present.
* Retries only for calls that are safe to repeat: GETs, and the state PUT, which is
  idempotent (asking for ``running`` twice leaves one running instance).

Status mapping: vast describes an instance with ``intended_status`` (what the user
asked for), ``actual_status`` (what the container does) and ``cur_state`` (the
hardware contract: is the GPU held?). vastops reports one word of the contract
(``vocabulary.Status``), first rule that applies (docs/vast-api.md §3, §6;
tests/core/test_status_table.py covers every combination):

    ===============  ===================  ============  ============  ==========================
    intended         actual               cur_state     status        why
    ===============  ===================  ============  ============  ==========================
    (no instance)    -                    -             not_found     ``{"instances": null}``
    any              unknown, offline     any           exited        the host is gone (or
                                                                      missed a heartbeat)
    stopped          any                  any           stopped       a stop was accepted: GPU
                                                                      billing has ended
    any              running, frozen      any           running       compute is billed
    any              loading, created,    any           loading       image pull / container
                     rebooting,                                       start, a reboot
                     restarting
    running/frozen   null, stopped,       stopped       scheduling    the start waits for its
                     exited                                           GPU (the console's label)
    running          exited, stopped      running       exited        the container died
    running          null                 not stopped   creating      being provisioned
    running          exited, stopped      (missing)     exited if an error is in status_msg,
                                                        else scheduling (older answers)
    ===============  ===================  ============  ============  ==========================
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

import requests

from vastops.config import DEFAULT_API_URL
from vastops.errors import VastError as VastError  # defined with its codes; raised here
from vastops.vocabulary import TRANSIENT_ERRORS, ErrorKind, Status

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
KILOBYTE = 1024.0  # vast's inet_*_billed unit (unsure: docs/vast-api.md §4); reconciliation shows a wrong guess
LIST_PAGE = 25  # vast's list answers at most 25 a page
CHARGES_PAGE = 100  # rows a charges page asks for (vast's CLI clamps to 100; the API takes 500)
CHARGE_KINDS = ("gpu", "disk", "bwd", "bwu")
ERROR_WORDS = ("error", "failed", "insufficient", "oci runtime", "cannot", "no space")


@dataclass(frozen=True)
class Instance:
    """What vastops needs to know of a vast.ai instance, in vastops' own words."""

    id: int
    status: Status
    gpu_name: str | None = None
    num_gpus: int = 1
    dph_base: float = 0.0  # $/h compute, billed while running
    storage_dph: float = 0.0  # $/h disk, billed while the instance exists
    public_ip: str | None = None
    host_ports: dict[int, int] = field(default_factory=dict)  # container port -> host port
    message: str | None = None  # vast's status_msg, or why the status is what it is
    intended_status: str | None = None  # vast's own word for what was asked: "stopped" confirms a stop
    machine_id: int | None = None  # the host machine, whose offers say whether its GPUs are free
    # The contract and what bills outside a session (vastops/reports/money): when the rental began
    # (storage bills from there) and ends (vast stops it then), $/GB of traffic, the bytes billed so far.
    start_date: float | None = None  # epoch seconds
    end_date: float | None = None
    inet_up_cost: float = 0.0  # $/GB
    inet_down_cost: float = 0.0
    up_billed_bytes: float | None = None  # vast's inet_up_billed (kilobytes, unsure: docs/vast-api.md §4)
    down_billed_bytes: float | None = None

    @property
    def dph_total(self) -> float:
        return self.dph_base + self.storage_dph

    def endpoint_base_url(self, container_port: int) -> str | None:
        host_port = self.host_ports.get(container_port)
        if not self.public_ip or host_port is None:
            return None
        return f"http://{self.public_ip}:{host_port}"


def map_status(intended: str | None, actual: str | None, status_msg: str | None, cur_state: str | None = None) -> Status:
    """vast's status fields -> one word of the contract (the table in the module docstring)."""
    if actual in ("unknown", "offline"):
        return Status.EXITED
    if intended == "stopped":
        return Status.STOPPED
    if actual in ("running", "frozen"):
        return Status.RUNNING
    if actual in ("loading", "created", "rebooting", "restarting"):
        return Status.LOADING
    if cur_state == "stopped":  # asked to run, the GPU not held yet: queued for it
        return Status.SCHEDULING
    if actual is None:
        return Status.CREATING
    if actual in ("exited", "stopped"):
        if cur_state is not None:
            return Status.EXITED  # the GPU is held and the container is not running: it died
        return Status.EXITED if failed_container(status_msg) else Status.SCHEDULING
    return Status.LOADING


def failed_container(status_msg: str | None) -> bool:
    """vast's status_msg names an error (a pull refused, an OCI failure): the container will not come up by waiting."""
    msg = (status_msg or "").lower()
    return any(w in msg for w in ERROR_WORDS)


def parse_instance(raw: dict[str, Any]) -> Instance:
    host_ports: dict[int, int] = {}
    for key, bindings in (raw.get("ports") or {}).items():
        try:
            container_port = int(str(key).split("/")[0])
            host_ports[container_port] = int(bindings[0]["HostPort"])  # HostPort is a string
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    status = map_status(raw.get("intended_status"), raw.get("actual_status"), raw.get("status_msg"), raw.get("cur_state"))
    storage = raw.get("storage_total_cost")
    if storage is None and raw.get("dph_total") is not None and raw.get("dph_base") is not None:
        storage = float(raw["dph_total"]) - float(raw["dph_base"])
    return Instance(
        id=int(raw["id"]),
        status=status,
        gpu_name=raw.get("gpu_name"),
        num_gpus=int(raw.get("num_gpus") or 1),
        dph_base=float(raw.get("dph_base") or 0.0),
        storage_dph=float(storage or 0.0),
        public_ip=(raw.get("public_ipaddr") or "").strip() or None,  # may carry trailing spaces
        host_ports=host_ports,
        message=raw.get("status_msg") or None,
        intended_status=raw.get("intended_status") or None,
        machine_id=raw["machine_id"] if isinstance(raw.get("machine_id"), int) else None,
        start_date=_number(raw.get("start_date")),
        end_date=_number(raw.get("end_date")),
        inet_up_cost=_number(raw.get("inet_up_cost")) or 0.0,
        inet_down_cost=_number(raw.get("inet_down_cost")) or 0.0,
        up_billed_bytes=_kilobytes(raw.get("inet_up_billed")),
        down_billed_bytes=_kilobytes(raw.get("inet_down_billed")),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _kilobytes(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else number * KILOBYTE


@dataclass(frozen=True)
class Offer:
    """One offer of vast's market (``search offers``), in vastops' words; units as vast gives them."""

    id: int  # the ask id that ``create_instance`` takes
    machine_id: int | None
    gpu_name: str
    num_gpus: int
    gpu_ram_gb: float  # per GPU
    cpu_ram_gb: float
    disk_gb: float  # the disk the machine offers
    dph_base: float  # $/h compute
    dph_total: float  # $/h compute + the disk asked for (``allocated_storage``)
    storage_cost: float  # $/GB/month
    reliability: float | None
    location: str | None
    cuda: float | None
    verified: bool
    inet_down_cost: float  # $/GB
    inet_up_cost: float


def parse_offer(raw: dict[str, Any]) -> Offer:
    def num(key: str, default: float = 0.0) -> float:
        value = raw.get(key)
        return float(value) if isinstance(value, int | float) else default

    return Offer(
        id=int(raw["id"]),
        machine_id=raw["machine_id"] if isinstance(raw.get("machine_id"), int) else None,
        gpu_name=str(raw.get("gpu_name") or "?"),
        num_gpus=int(raw.get("num_gpus") or 1),
        gpu_ram_gb=num("gpu_ram") / 1000,  # MB, as vast's CLI multiplies by 1000
        cpu_ram_gb=num("cpu_ram") / 1000,
        disk_gb=num("disk_space"),
        dph_base=num("dph_base"),
        dph_total=num("dph_total", num("dph_base")),
        storage_cost=num("storage_cost"),
        reliability=num("reliability2", num("reliability", -1.0)) if ("reliability2" in raw or "reliability" in raw) else None,
        location=(str(raw["geolocation"]).strip() or None) if raw.get("geolocation") else None,
        cuda=num("cuda_max_good") if isinstance(raw.get("cuda_max_good"), int | float) else None,
        verified=bool(raw.get("verified")),
        inet_down_cost=num("inet_down_cost"),
        inet_up_cost=num("inet_up_cost"),
    )


class Created(TypedDict):
    """vast's answer to an instance creation: the new instance's id (its contract)."""

    instance_id: int


class ChargeItem(TypedDict):
    type: str | None
    amount: float
    description: str | None


class Charge(TypedDict):
    """One contract's charges over a range, as vast bills them (``VastClient.charges``)."""

    source: str  # "instance-<id>", "volume-<id>", ...: rows of other contracts are in the same answer
    instance_id: int | None
    start: float | None  # vast's epoch seconds
    end: float | None
    amount: float
    items: list[ChargeItem]


class PriceRise(TypedDict):
    """A host's pending price increase on one contract, in $/h and $/GB; it applies at ``applies_at``
    (the contract's current end date, epoch seconds). None: that rate does not change."""

    instance_id: int
    old_dph_base: float | None
    new_dph_base: float | None
    old_storage_dph: float | None
    new_storage_dph: float | None
    old_inet_up_cost: float | None
    new_inet_up_cost: float | None
    old_inet_down_cost: float | None
    new_inet_down_cost: float | None
    applies_at: float | None


class VastClient:
    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_API_URL,
        *,
        timeout: tuple[float, float] = (3.05, 20.0),
        retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ):
        if not api_key:
            raise ValueError("an API key is required")
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._http = session or requests.Session()
        self._http.headers.update({"Authorization": f"Bearer {api_key}", "Accept": "application/json"})
        # Counts of failures by kind, for the watchdog's /metrics.
        self.error_counts: dict[str, int] = {}

    def __repr__(self) -> str:  # never show the key
        return f"VastClient(base_url={self.base_url!r})"

    # -- the calls ---------------------------------------------------------------

    def show_instance(self, instance_id: int) -> Instance:
        body = self._call("GET", f"/api/v0/instances/{instance_id}/", params={"owner": "me"})
        # Only vast's own answer {"instances": null} means "no such instance"; any other
        # body (a proxy's HTML page, a changed format) is an error, never a stopped instance.
        if not isinstance(body, dict) or "instances" not in body:
            raise VastError(ErrorKind.UNAVAILABLE, "vast.ai gave an unexpected answer (not its JSON); try again shortly.")
        if not body["instances"]:
            raise self._not_found(instance_id)
        return parse_instance(body["instances"])

    def list_instances(
        self, ids: Sequence[int], *, pause: Callable[[], None] | None = None, bad: dict[int, str] | None = None
    ) -> dict[int, Instance]:
        """The instances among ``ids`` that exist, by id: vast's list call (``GET /api/v1/instances/``) filtered to
        them, every page (``LIST_PAGE`` a page). An id vast does not list is absent (not found, or destroyed).

        One call for a whole fleet where a show per instance would meet the rate limit (docs/vast-api.md §5).
        ``pause`` runs before each further page (vast allows about one list call a second per key). A row
        that cannot be read is left out, its id and why in ``bad``: one odd row never hides the others."""
        wanted = set(ids)
        params: dict[str, Any] = {"select_filters": json.dumps({"id": {"in": sorted(wanted)}}), "limit": LIST_PAGE}
        found: dict[int, Instance] = {}
        for row in self._pages("/api/v1/instances/", params, "instances", "the instance list", pause):
            if isinstance(row, dict) and isinstance(row.get("id"), int) and row["id"] in wanted:
                try:
                    found[row["id"]] = parse_instance(row)
                except (TypeError, ValueError, KeyError, AttributeError) as exc:
                    if bad is not None:
                        bad[row["id"]] = f"{type(exc).__name__}: {exc}"
        return found

    def start(self, instance_id: int) -> None:
        self._call("PUT", f"/api/v0/instances/{instance_id}/", json_body={"state": "running"}, instance_id=instance_id)

    def stop(self, instance_id: int) -> None:
        self._call("PUT", f"/api/v0/instances/{instance_id}/", json_body={"state": "stopped"}, instance_id=instance_id)

    def reboot(self, instance_id: int) -> None:
        """Restart the container in place: the GPU is kept (docs/vast-api.md §2)."""
        self._call("PUT", f"/api/v0/instances/reboot/{instance_id}/", json_body={}, instance_id=instance_id)

    def free_gpus(self, machine_id: int) -> int:
        """How many GPUs the machine offers for rent right now (search offers, docs/vast-api.md §6):
        0 when another client holds them. Its offers are slices of the same free GPUs, so the
        largest one counts."""
        query = {"machine_id": {"eq": machine_id}, "rentable": {"eq": True}, "rented": {"eq": False}, "type": "on-demand"}
        body = self._call("POST", "/api/v0/bundles/", json_body=query, retries=0)  # a hint, not worth a wait
        offers = body.get("offers") if isinstance(body, dict) else None
        if not isinstance(offers, list):
            raise VastError(ErrorKind.UNAVAILABLE, "vast.ai gave an unexpected answer to an offer search (no offers); try again shortly.")
        counts = [o.get("num_gpus") for o in offers if isinstance(o, dict) and o.get("machine_id") == machine_id]
        return max((n for n in counts if isinstance(n, int)), default=0)

    def search_offers(self, query: dict[str, Any]) -> list[Offer]:
        """vast's market for ``query`` (vast's query language: ``{col: {op: value}}``, ``type``,
        ``order``, ``limit``, ``allocated_storage``), as ``vastai search offers`` sends it."""
        body = self._call("POST", "/api/v0/bundles/", json_body=query)
        offers = body.get("offers") if isinstance(body, dict) else None
        if not isinstance(offers, list):
            raise VastError(ErrorKind.UNAVAILABLE, "vast.ai gave an unexpected answer to an offer search (no offers); try again shortly.")
        return [parse_offer(o) for o in offers if isinstance(o, dict) and isinstance(o.get("id"), int)]

    def create_instance(self, offer_id: int, body: dict[str, Any]) -> Created:
        """Rent the offer ``offer_id`` with the template ``body`` (``PUT /asks/{id}/``): it bills from here.

        Never retried: a second try after a lost answer would rent a second GPU. The answer
        also carries the instance's own key (``instance_api_key``), which vastops does not keep."""
        answer = self._call("PUT", f"/api/v0/asks/{offer_id}/", json_body={"client_id": "me", **body}, retries=0, creating=offer_id)
        new = answer.get("new_contract") if isinstance(answer, dict) else None
        if not isinstance(new, int):
            raise VastError(ErrorKind.API, f"vast.ai accepted the rental of offer {offer_id} but named no instance; check vast's console.")
        return {"instance_id": new}

    def destroy(self, instance_id: int) -> None:
        """Destroy the instance: its disk and everything on it are gone; billing ends (``DELETE``)."""
        self._call("DELETE", f"/api/v0/instances/{instance_id}/", json_body={}, instance_id=instance_id, retries=0)

    def credit(self) -> float:
        """The account's spendable credit in dollars (``users/current``; docs/vast-api.md §4)."""
        body = self._call("GET", "/api/v0/users/current/")
        if not isinstance(body, dict) or not isinstance(body.get("credit"), int | float):
            raise VastError(ErrorKind.UNAVAILABLE, "vast.ai gave an unexpected answer for the account (no credit); try again shortly.")
        return float(body["credit"])

    def logs(self, instance_id: int, tail: int = 200) -> str:
        """The instance's container log, its last ``tail`` lines (vast prepares it behind a URL)."""
        body = self._call("PUT", f"/api/v0/instances/request_logs/{instance_id}/", json_body={"tail": str(tail)}, instance_id=instance_id)
        url = body.get("result_url") if isinstance(body, dict) else None
        if not url:
            raise VastError(ErrorKind.API, "vast.ai gave no log URL for the instance.")
        for attempt in range(5):  # the log is written behind the URL a moment after the request
            try:
                answer = requests.get(url, timeout=self.timeout)  # not the session: the key stays with vast.ai
            except requests.RequestException:
                answer = None
            if answer is not None and answer.status_code == 200:
                return answer.text
            self._sleep(0.5 * (attempt + 1))
        raise VastError(ErrorKind.UNAVAILABLE, "the instance's log did not become available; try again shortly.")

    def charges(self, start: datetime, end: datetime, *, pause: Callable[[], None] | None = None) -> list[Charge]:
        """Every contract's charges in [start, end], as vast bills them, all pages.

        ``pause`` runs before each further page (the caller's pacing: vast allows about one
        charges call a second per key, docs/vast-api.md §5)."""
        filters = {"day": {"gte": int(start.timestamp()), "lte": int(end.timestamp())}}
        params: dict[str, Any] = {"select_filters": json.dumps(filters), "limit": CHARGES_PAGE, "latest_first": "false"}
        rows = self._pages("/api/v0/charges/", params, "results", "the charges (no results)", pause)
        return [_charge(row) for row in rows if isinstance(row, dict)]

    def _pages(self, path: str, params: dict[str, Any], key: str, what: str, pause: Callable[[], None] | None) -> Iterator[Any]:
        """Every row of a paged GET (``next_token`` / ``after_token``), page by page; ``pause`` before each further page.

        A token seen before (or a page without rows) ends the paging: a server that repeats
        itself must not keep the watchdog busy for ever."""
        seen: set[str] = set()
        while True:
            body = self._call("GET", path, params=params)
            rows = body.get(key) if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise VastError(ErrorKind.UNAVAILABLE, f"vast.ai gave an unexpected answer for {what}; try again shortly.")
            yield from rows
            token = body.get("next_token")
            if not token or not rows or token in seen:
                return
            seen.add(token)
            params["after_token"] = token
            if pause is not None:
                pause()

    def price_rises(self) -> list[PriceRise]:
        """The hosts' pending price increases on the account's contracts (applied at each contract's end)."""
        body = self._call("GET", "/api/v0/instances/pending-price-increases/")
        rows = body.get("pending_price_increases") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise VastError(ErrorKind.UNAVAILABLE, "vast.ai gave an unexpected answer for price increases; try again shortly.")
        return [_price_rise(r) for r in rows if isinstance(r, dict) and isinstance(r.get("contract_id"), int)]

    # -- transport ---------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params=None,
        json_body=None,
        instance_id: int | None = None,
        retries: int | None = None,
        creating: int | None = None,
    ) -> Any:
        url = self.base_url + path
        attempts = (self.retries if retries is None else retries) + 1
        last: VastError | None = None
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                resp = self._http.request(method, url, params=params, json=json_body, timeout=self.timeout)
            except requests.Timeout:
                last = VastError(ErrorKind.UNAVAILABLE, f"vast.ai did not answer in time ({self.base_url}).")
            except requests.ConnectionError:
                last = VastError(ErrorKind.UNAVAILABLE, f"vast.ai is unreachable at {self.base_url} (connection failed).")
            else:
                body = _body(resp)
                if resp.ok and not (isinstance(body, dict) and body.get("success") is False):
                    return body
                last = self._classify(resp.status_code, body, instance_id, creating)
                if resp.status_code not in RETRYABLE_STATUS and last.kind != ErrorKind.RATE_LIMITED:
                    break
                retry_after = _retry_after(resp)
            if last.kind not in TRANSIENT_ERRORS or attempt == attempts - 1:
                break
            self._sleep(self._backoff(attempt, retry_after))
        assert last is not None
        self.error_counts[last.kind] = self.error_counts.get(last.kind, 0) + 1
        if last.kind == ErrorKind.RATE_LIMITED:
            last = VastError(
                ErrorKind.RATE_LIMITED, f"vast.ai rate limit: still refused after {attempts} tries; wait a minute and retry.", 429
            )
        raise last

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and 0 <= retry_after <= 60:
            return retry_after
        delay = min(self.backoff_max, self.backoff_base * (2**attempt))
        return delay * random.uniform(0.8, 1.2)  # jitter: several processes share one key

    def _not_found(self, instance_id: int) -> VastError:
        return VastError(ErrorKind.NOT_FOUND, f"vast.ai has no instance {instance_id}; check VAST_INSTANCE_ID.", 404)

    def _classify(self, status: int, body: Any, instance_id: int | None, creating: int | None = None) -> VastError:
        code = msg = None
        if isinstance(body, dict):
            code = body.get("error")
            msg = body.get("msg") or body.get("message") or body.get("detail")
        text = body if isinstance(body, str) else ""
        msg = self._scrub(str(msg or text or "").strip()[:300])
        if code == "auth_error":
            return VastError(ErrorKind.AUTH, f"vast.ai rejected the API key ({msg or 'auth_error'}); check VAST_API_KEY.", status)
        if code in ("no_such_instance", "not_found") and instance_id is not None:
            return self._not_found(instance_id)
        if creating is not None and (refusal := _creation_refusal(code, msg, creating)):
            return VastError(ErrorKind.API, refusal, status)
        if status == 429 or code == "rate_limit_exceeded" or "too frequent" in text:
            return VastError(ErrorKind.RATE_LIMITED, "vast.ai rate limit (429).", status)
        if status >= 500:
            return VastError(ErrorKind.UNAVAILABLE, f"vast.ai answered {status} (server error){': ' + msg if msg else ''}.", status)
        detail = f"{code}: {msg}" if code else msg or "no details"
        return VastError(ErrorKind.API, f"vast.ai refused the call ({status}, {detail}).", status)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _creation_refusal(code: Any, msg: str, offer_id: int) -> str | None:
    """A refused rental in one line that says what to do (the codes are vast's, partly unsure: docs/vast-api.md)."""
    words = f"{code or ''} {msg}".lower()
    if code in ("no_such_ask", "ask_not_available") or "no longer available" in words or "not available" in words:
        return f"offer {offer_id} is no longer available (rented meanwhile): search again with `vastops instance offers`."
    if "credit" in words or "balance" in words or code in ("insufficient_credit", "insufficient_funds"):
        return f"vast.ai refused the rental: too little credit ({msg or code}); add credit in vast's console."
    if "image" in words:
        return f"vast.ai refused the image ({msg or code}); check VASTOPS_IMAGE."
    return None


def _charge(row: dict[str, Any]) -> Charge:
    source = str(row.get("source") or "")
    kind, _, number = source.partition("-")
    instance_id = int(number) if kind == "instance" and number.isdigit() else None
    raw_items = row.get("items")
    items: list[Any] = raw_items if isinstance(raw_items, list) else []
    return {
        "source": source,
        "instance_id": instance_id,
        "start": _number(row.get("start")),
        "end": _number(row.get("end")),
        "amount": _number(row.get("amount")) or 0.0,
        "items": [
            {"type": i.get("type"), "amount": _number(i.get("amount")) or 0.0, "description": i.get("description")}
            for i in items
            if isinstance(i, dict)
        ],
    }


def _price_rise(row: dict[str, Any]) -> PriceRise:
    def per_hour(key: str) -> float | None:
        value = _number(row.get(key))
        return None if value is None else value * 3600  # vast gives $/s

    return {
        "instance_id": int(row["contract_id"]),
        "old_dph_base": per_hour("old_gpu_costpersec"),
        "new_dph_base": per_hour("new_gpu_costpersec"),
        "old_storage_dph": per_hour("old_disk_ram_costpersec"),
        "new_storage_dph": per_hour("new_disk_ram_costpersec"),
        "old_inet_up_cost": _number(row.get("old_bwu_cost")),
        "new_inet_up_cost": _number(row.get("new_bwu_cost")),
        "old_inet_down_cost": _number(row.get("old_bwd_cost")),
        "new_inet_down_cost": _number(row.get("new_bwd_cost")),
        "applies_at": _number(row.get("contract_end_date")),
    }


def _body(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return float(resp.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
