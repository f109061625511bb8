"""The fleet: which instances vastops controls, by name, each with its own settings.

``VAST_INSTANCE_ID`` alone is a fleet of one (everything as before). ``VAST_INSTANCE_IDS``
lists instances that share the global settings; a fleet file (``VASTOPS_FLEET_FILE``, TOML)
names instances and overrides per instance what differs::

    default = "chat"                 # the seed's routes act on it (else VAST_DEFAULT_INSTANCE, else the first)

    [budget]                         # the fleet's own budgets (else VASTOPS_FLEET_BUDGET_*_USD)
    daily_usd = 40

    [instances.chat]
    id = 12345
    models = ["mistralai/Mistral-7B-Instruct-v0.3"]
    idle_minutes = 30

    [instances.embed]
    id = 23456
    models = ["BAAI/bge-m3"]
    idle_minutes = 10
    budget_daily_usd = 5

Each member's ``settings`` is the global ``Settings`` with its overrides and its
``vast_instance_id``, validated by the same rules as the environment: every part of vastops
that knows one instance works on a member unchanged. An unknown key, an instance listed
twice, a bad value: one ``ConfigError`` line naming the file, the instance and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vastops.config import ConfigError, Settings, load_settings

# A fleet file's per-instance key -> the setting it overrides.
OVERRIDES = {
    "idle_minutes": "vast_auto_shutdown_minutes",
    "auto_shutdown": "vast_auto_shutdown",
    "health_port": "vast_health_port",
    "health_path": "vast_health_path",
    "health_token": "vast_health_token",
    "endpoint_port": "vast_endpoint_port",
    "request_ttl_s": "vast_request_ttl_s",
    "wait_timeout_s": "vast_wait_timeout_s",
    "agent_token": "vastops_agent_token",
    "agent_port": "vast_agent_port",
    "agent_lease_minutes": "vast_agent_lease_minutes",
    "warning_minutes": "vast_shutdown_warning_minutes",
    "max_session_hours": "vast_max_session_hours",
    "daily_stop_at": "vast_daily_stop_at",
    "budget_daily_usd": "vast_budget_daily_usd",
    "budget_monthly_usd": "vast_budget_monthly_usd",
    "model": "vastops_model",
}
INSTANCE_KEYS = ("id", "models", *OVERRIDES)
TOP_KEYS = ("default", "budget", "instances")
BUDGET_KEYS = ("daily_usd", "monthly_usd")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # starts with a letter: never mistaken for an id


@dataclass(frozen=True)
class Member:
    """One instance of the fleet: its name, its id, its settings (with its overrides), the models it serves."""

    name: str
    instance_id: int
    settings: Settings = field(repr=False)
    models: tuple[str, ...] = ()  # named in the fleet file; empty: found on its /v1/models

    @property
    def label(self) -> str:
        """How messages name it: ``chat (12345)``, or the id alone when it has no name of its own."""
        return str(self.instance_id) if self.name == str(self.instance_id) else f"{self.name} ({self.instance_id})"


@dataclass(frozen=True)
class Fleet:
    members: tuple[Member, ...]
    default: Member | None
    budget_daily_usd: float | None = None
    budget_monthly_usd: float | None = None
    source: str = "VAST_INSTANCE_ID"  # where the list came from, for messages

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(m.instance_id for m in self.members)

    @property
    def is_fleet(self) -> bool:
        """More than one instance (a fleet of one behaves exactly as vastops did with one)."""
        return len(self.members) > 1

    @property
    def budgeted(self) -> bool:
        return self.budget_daily_usd is not None or self.budget_monthly_usd is not None

    def find(self, key: str | int) -> Member:
        """The member named ``key`` or with that id; ``ConfigError`` listing the fleet otherwise."""
        text = str(key).strip()
        for m in self.members:
            if text in (m.name, str(m.instance_id)):
                return m
        known = ", ".join(m.label for m in self.members) or "none configured"
        raise ConfigError(f"no instance {text!r} in the fleet (known: {known})")

    def get(self, key: str | int) -> Member | None:
        try:
            return self.find(key)
        except ConfigError:
            return None

    def pick(self, key: str | int | None) -> Member | None:
        """The member ``key`` names, or the default one for None."""
        return self.default if key is None or key == "" else self.find(key)

    def settings_for(self, key: str | int | None, base: Settings) -> Settings:
        """What a shell acting on one instance uses: the member's settings, or ``base`` when none is configured."""
        member = self.pick(key)
        return member.settings if member is not None else base

    def serving(self, model: str) -> Member | None:
        """The member whose fleet file names ``model``."""
        for m in self.members:
            if model in m.models:
                return m
        return None


def _where(path: Path | None, name: str | None = None) -> str:
    where = f"the fleet file {path}" if path else "the fleet"
    return f"{where}: [instances.{name}]" if name else where


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read the fleet file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the fleet file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the fleet file {path} is not UTF-8 text") from None


def _unknown(keys: Any, allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: {', '.join(allowed)})")


def _member_settings(base: Settings, iid: int, values: dict[str, Any], where: str) -> Settings:
    overrides: dict[str, Any] = {"vast_instance_id": iid}
    for key, setting in OVERRIDES.items():
        if key in values:
            overrides[setting] = values[key]
    current = {name: getattr(base, name) for name in Settings.model_fields}
    try:
        return load_settings(None, **{**current, **overrides})
    except ConfigError as exc:
        text = str(exc).removeprefix("invalid configuration: ")
        for key, setting in OVERRIDES.items():
            text = text.replace(setting.upper() + ":", key + ":")
        raise ConfigError(f"{where}: {text}") from None


def _models(values: dict[str, Any], where: str) -> tuple[str, ...]:
    models = values.get("models", [])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        raise ConfigError(f"{where}: models: expected a list of model names")
    return tuple(m.strip() for m in models)


def load_fleet(settings: Settings) -> Fleet:
    """The fleet these settings describe (``ConfigError`` naming what is wrong); empty when no instance is configured."""
    path = settings.vastops_fleet_file
    members: list[Member] = []
    seen: dict[int, str] = {}
    sources = []

    def add(member: Member, where: str) -> None:
        if member.instance_id in seen:
            raise ConfigError(f"{where}: instance {member.instance_id} is listed twice (also as {seen[member.instance_id]})")
        if any(m.name == member.name for m in members):
            raise ConfigError(f"{where}: the name {member.name!r} is used twice")
        seen[member.instance_id] = member.name
        members.append(member)

    data = _read_file(path) if path else {}
    _unknown(data, TOP_KEYS, _where(path))
    named = data.get("instances", {})
    if not isinstance(named, dict):
        raise ConfigError(f"{_where(path)}: instances: expected tables like [instances.chat]")
    file_ids: dict[int, tuple[str, dict[str, Any]]] = {}
    for name, values in named.items():
        where = _where(path, name)
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a table with id = ...")
        if not NAME.fullmatch(name):
            raise ConfigError(f"{where}: a name starts with a letter (letters, digits, - _ .; at most 64)")
        _unknown(values, INSTANCE_KEYS, where)
        iid = values.get("id")
        if isinstance(iid, bool) or not isinstance(iid, int) or not 0 < iid <= 2**63 - 1:
            raise ConfigError(f"{where}: id: expected the numeric vast.ai instance id")
        if iid in file_ids:
            raise ConfigError(f"{where}: instance {iid} is listed twice (also as [instances.{file_ids[iid][0]}])")
        file_ids[iid] = (name, values)

    listed: list[int] = []
    if settings.vast_instance_id is not None:
        listed.append(settings.vast_instance_id)
        sources.append("VAST_INSTANCE_ID")
    if settings.vast_instance_ids:
        for part in settings.vast_instance_ids.split(","):
            if int(part) in listed:
                raise ConfigError(f"VAST_INSTANCE_IDS: instance {part} is listed twice (also VAST_INSTANCE_ID)")
            listed.append(int(part))
        sources.append("VAST_INSTANCE_IDS")
    if path:
        sources.append(f"VASTOPS_FLEET_FILE ({path})")
    # The listed ones in their order (with the file's name and overrides if it names them), then the file's others.
    for iid in [*listed, *(i for i in file_ids if i not in listed)]:
        name, values = file_ids.get(iid, (str(iid), {}))
        where = _where(path, name) if iid in file_ids else f"VAST_INSTANCE_IDS: {iid}"
        models = _models(values, where)
        for model in models:
            other = next((m for m in members if model in m.models), None)
            if other is not None:  # a request for it could wake either: say which serves it
                raise ConfigError(f"{where}: models: {model!r} is served by [instances.{other.name}] already (each model by one instance)")
        add(Member(name, iid, _member_settings(settings, iid, values, where), models), where)

    default_key = data.get("default", settings.vast_default_instance)
    default = members[0] if members else None
    if default_key not in (None, ""):
        chosen = next((m for m in members if str(default_key) in (m.name, str(m.instance_id))), None)
        if chosen is None:
            what = "default" if "default" in data else "VAST_DEFAULT_INSTANCE"
            known = ", ".join(m.label for m in members) or "none configured"
            raise ConfigError(
                f"{_where(path) if 'default' in data else what}: {what} names no instance of the fleet ({default_key!r}; known: {known})"
            )
        default = chosen
    daily, monthly = settings.vastops_fleet_budget_daily_usd, settings.vastops_fleet_budget_monthly_usd
    budget = data.get("budget", {})
    if budget:
        where = f"{_where(path)}: [budget]"
        if not isinstance(budget, dict):
            raise ConfigError(f"{where}: expected a table")
        _unknown(budget, BUDGET_KEYS, where)
        for key in BUDGET_KEYS:
            value = budget.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf")):
                raise ConfigError(f"{where}: {key}: expected a number greater than 0")
        daily = budget.get("daily_usd", daily)
        monthly = budget.get("monthly_usd", monthly)
    return Fleet(tuple(members), default, daily, monthly, " and ".join(sources) or "nothing")


def default_settings(settings: Settings) -> Settings:
    """The settings of the fleet's default instance (the seed's routes, a command without ``--instance``)."""
    return load_fleet(settings).settings_for(None, settings)
