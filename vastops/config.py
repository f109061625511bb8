"""Configuration: every variable of docs/contract.md, from the environment or ``.env``.

The real environment wins over ``.env``. A bad value raises ``ConfigError`` whose
message names the variable and what it expected; the shells print it and exit,
never a traceback. Secrets are ``SecretStr`` so they never show up in a repr or log.

Under systemd a secret comes as a credential (``LoadCredential=``, the units in
``watchdog/``): a secret setting neither the environment nor ``.env`` sets is read from
``$CREDENTIALS_DIRECTORY/<its lowercase name>`` (``vast_api_key``, ``control_api_key``, ...:
``SECRET_SETTINGS``), one trailing newline dropped, an empty file meaning "not set".

``VAST_STATE_PATH`` and ``VAST_AUDIT_PATH`` (the seed's JSON state file and audit
log) are honoured as *mirrors* of the ledger: the ledger stays the one source of
truth, and vastops keeps those files up to date for tools that read them
(see ``Ledger._mirror`` in vastops/ledger/).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vastops.errors import ConfigError, NotConfigured  # defined with their codes; raised here

DEFAULT_API_URL = "https://console.vast.ai"
DEFAULT_WATCHDOG_URL = "http://127.0.0.1:8787"
MAX_WAIT_S = 24 * 3600.0  # a start that has not answered /health in a day never will
MAX_IDLE_MINUTES = 7 * 24 * 60.0  # a week
MIN_CONTROL_KEY_CHARS = 16
DEFAULT_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"  # the seed's model (gated on Hugging Face: HF_TOKEN)
DEFAULT_IMAGE = "vastai/vllm:v0.14.0-cuda-12.9"  # vast's vLLM image: its supervisor, its auth edge (docs/vast-api.md)  # the REST API's only lock: a short key is guessed


@dataclass(frozen=True)
class VastTarget:
    """What vastops needs to act on vast.ai at all: a key and the instance it controls.

    A type of its own, so code that calls vast.ai gets an ``int`` instance id and a
    key, never an ``Optional`` that it must check again.
    """

    api_key: SecretStr
    instance_id: int


class Credentials(PydanticBaseSettingsSource):
    """The secret settings systemd hands the process as files: ``$CREDENTIALS_DIRECTORY/<lowercase name>``.

    The last source (the environment and ``.env`` win). A file that is there but cannot be
    read is a ``ConfigError`` naming the file, never its content.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read at once, in __call__

    def __call__(self) -> dict[str, Any]:
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            return {}
        values: dict[str, Any] = {}
        for name in SECRET_SETTINGS:
            path = Path(folder) / name
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except UnicodeDecodeError:
                raise ConfigError(f"the credential {path} ({name.upper()}) is not UTF-8 text") from None
            except OSError as exc:
                raise ConfigError(f"cannot read the credential {path} ({name.upper()}): {exc.strerror or exc}") from None
            value = text.removesuffix("\n").removesuffix("\r")  # `echo KEY > file` adds one
            if value:
                values[name] = value
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # "VAST_API_KEY=" in .env means "not set", not "the empty key".
        env_ignore_empty=True,
    )

    vast_api_key: SecretStr | None = Field(None, description="vast.ai API key")
    # SQLite stores 64-bit integers; vast's ids are far below that.
    vast_instance_id: int | None = Field(None, gt=0, le=2**63 - 1, description="numeric vast.ai instance id")
    # A fleet (vastops/fleet.py): several instances under one watchdog, ledger and dashboard.
    vast_instance_ids: str | None = Field(
        None, max_length=10_000, description="a fleet: comma-separated instance ids sharing these settings"
    )
    vastops_fleet_file: Path | None = Field(None, description="a fleet file (TOML): instances by name, with what differs per instance")
    vast_default_instance: str | None = Field(
        None, max_length=100, description="the instance the seed's routes act on (name or id; default: the first listed)"
    )
    vastops_fleet_budget_daily_usd: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="the fleet's daily budget (every instance's compute and storage)"
    )
    vastops_fleet_budget_monthly_usd: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="the fleet's monthly budget (every instance's compute and storage)"
    )
    control_api_key: SecretStr | None = Field(None, description="admin key for the REST API")
    vast_health_port: int = Field(8001, ge=1, le=65535, description="health port on the instance")
    # vLLM serves the API on 8000 and nginx /health on 8001 in the seed's layout; unset, the
    # endpoint is the health port's (the seed's own example answer), as before.
    vast_endpoint_port: int | None = Field(None, ge=1, le=65535, description="container port of the LLM API (endpoint_base_url)")
    vast_health_path: str = Field("/health", description="health path on the instance")
    # vast's images put an auth edge (Caddy) in front of every published port, /health included:
    # every call vastops makes to the instance sends this as a Bearer token (vastops/instance/health.py).
    vast_health_token: SecretStr | None = Field(None, description="the token of vast's auth edge on the instance (WEB_PASSWORD)")
    vast_auto_reboot_on_dead_engine: bool = Field(False, description="reboot once when vLLM's engine dies (its /health answers 503)")
    # The agent on the instance (vastops/instance/agent.py): vLLM's load as activity, and the dead-man switch.
    vastops_agent_token: SecretStr | None = Field(None, description="the token the instance's agent answers to (unset: no agent)")
    vast_agent_port: int = Field(8002, ge=1, le=65535, description="the agent's container port on the instance")
    vast_agent_lease_minutes: float = Field(
        10.0, gt=0, le=MAX_IDLE_MINUTES, allow_inf_nan=False, description="how long the agent's lease holds without a renewal"
    )
    vast_agent_release_margin_s: float = Field(
        120.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False, description="vLLM idle this long releases a gateway's stale in-flight start"
    )
    # Money (vastops/watchdog/money.py, vastops/reports/): vast's charges, notices.
    vast_charges_every_minutes: float = Field(
        60.0, ge=1, le=MAX_IDLE_MINUTES, allow_inf_nan=False, description="how often the watchdog fetches vast's charges"
    )
    vast_charges_days: int = Field(62, ge=1, le=400, description="how many days back vast's charges are fetched (days not yet settled)")
    vast_stopped_storage_notice_days: float = Field(
        7.0, gt=0, le=3650, allow_inf_nan=False, description="a stopped instance's disk is notified after this many days"
    )
    vast_contract_notice_days: float = Field(
        3.0, gt=0, le=3650, allow_inf_nan=False, description="the contract's end is notified this many days ahead"
    )
    vastops_activity_keep_days: int = Field(400, ge=1, le=3650, description="how long the busy minutes are kept (the what-if)")
    vastops_requests_keep_days: int = Field(
        30, ge=1, le=3650, description="how long the gateway's request rows are kept (settled hours are rolled up before)"
    )
    # What the instance runs (vastops/instance/template.py): `vastops instance template|create`.
    vastops_model: str = Field(DEFAULT_MODEL, min_length=1, max_length=200, description="the model vLLM serves")
    vastops_image: str = Field(
        DEFAULT_IMAGE, min_length=1, max_length=300, description="the instance's image (vast's vLLM image, or vllm/vllm-openai)"
    )
    vastops_vllm_args: str = Field("--max-model-len 8192", max_length=2000, description="vLLM's arguments besides the model and ports")
    vastops_disk_gb: float = Field(
        150.0, ge=20, le=10_000, allow_inf_nan=False, description="the instance's disk in GB (fixed at creation)"
    )
    # Upper bounds keep every date computed from them representable (1e300 minutes is not).
    vast_wait_timeout_s: float = Field(600.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False, description="how long power-on waits for health")
    vast_scheduling_timeout_s: float = Field(
        300.0,
        ge=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="how long a start may wait for its GPU before it is cancelled (0: forever)",
    )
    vast_low_credit_usd: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="warn when the account's credit falls below this"
    )
    vast_auto_shutdown: bool = Field(True, description="auto-shutdown on/off")
    vast_auto_shutdown_minutes: float = Field(
        30.0, gt=0, le=MAX_IDLE_MINUTES, allow_inf_nan=False, description="idle minutes before the stop"
    )
    # A request the gateway said started holds the instance awake until its end, or this long (vastops/watchdog/inflight.py).
    vast_request_ttl_s: float = Field(
        900.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False, description="how long a request in flight holds the instance without its end"
    )
    # Guardrails (vastops/stops.py): a warning before each stop, keepalives, hard limits, budgets.
    vast_shutdown_warning_minutes: float = Field(
        5.0, ge=0, le=MAX_IDLE_MINUTES, allow_inf_nan=False, description="warn this long before a stop (0: no warning)"
    )
    vast_keepalive_max_minutes: float = Field(
        480.0, ge=1, le=MAX_IDLE_MINUTES, allow_inf_nan=False, description="the longest keepalive one may ask for"
    )
    vast_max_session_hours: float | None = Field(
        None, gt=0, le=MAX_IDLE_MINUTES / 60, allow_inf_nan=False, description="stop any session this long (unset: no limit)"
    )
    vast_daily_stop_at: time | None = Field(None, description="stop the instance at this time every day (HH:MM, VASTOPS_TIMEZONE)")
    vastops_timezone: str = Field("UTC", description="IANA time zone for the daily stop and the budgets' days and months")
    vast_budget_daily_usd: float | None = Field(None, gt=0, allow_inf_nan=False, description="daily budget (compute and storage)")
    vast_budget_monthly_usd: float | None = Field(None, gt=0, allow_inf_nan=False, description="monthly budget (compute and storage)")
    vast_notify_webhook_url: SecretStr | None = Field(
        None, description="webhook for notifications (its path is a secret); with the apprise format, Apprise URLs"
    )
    vast_notify_format: Literal["slack", "json", "apprise"] = Field(
        "slack",
        validate_default=True,  # the default (slack) checks the URL too
        description='slack ({"text": ...}), json (the audit event) or apprise (any channel: vastops[notify])',
    )
    vast_state_path: Path | None = Field(None, description="JSON mirror of the current state")
    vast_audit_path: Path | None = Field(None, description="JSON-lines mirror of the audit trail")
    vast_api_url: str = Field(DEFAULT_API_URL, description="vast.ai base URL")
    vastops_db: Path = Field(Path("./vastops.db"), description="the SQLite ledger")
    vastops_dashboard_password: SecretStr | None = Field(None, description="dashboard login password")
    vastops_dashboard_session_hours: float = Field(
        12.0, gt=0, le=24 * 30, allow_inf_nan=False, description="how long a dashboard login lasts (reloads and new tabs included)"
    )

    # The wake proxy (vastops/proxy/): where the watchdog is, and how it answers while the GPU boots.
    vastops_watchdog_url: str = Field(DEFAULT_WATCHDOG_URL, description="the watchdog's base URL (the proxy and the LiteLLM callback)")
    # What a client presents to the watchdog, so a shared .env can give the proxy a named key with
    # the operator role (it reads the status and wakes) instead of the admin CONTROL_API_KEY.
    vastops_watchdog_key: SecretStr | None = Field(
        None, description="the key the proxy and the LiteLLM callback send the watchdog (default: CONTROL_API_KEY)"
    )
    vastops_proxy_key: SecretStr | None = Field(None, description="the key clients must send to the proxy (unset: none)")
    vastops_wake_on_request: bool = Field(True, description="the proxy starts a stopped instance when a request comes")
    vastops_wake_hold_s: float = Field(
        60.0, ge=0, le=3600, allow_inf_nan=False, description="how long the proxy holds a non-streaming request while the GPU boots"
    )
    # vast shows every start as scheduling for a moment (about 2 s); only a longer wait means a rented-out GPU.
    vastops_wake_gpu_wait_s: float = Field(
        10.0, ge=0.5, le=3600, allow_inf_nan=False, description="a start still scheduling this long after the ask waits for its GPU"
    )
    vastops_proxy_max_waiting: int = Field(100, ge=0, le=100_000, description="how many requests may wait for a start at once")
    vastops_proxy_consumer_header: str = Field(
        "x-vastops-consumer", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$", description="the request header naming the consumer"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier wins: what the code passes, the environment, .env, then systemd's credentials.
        return init_settings, env_settings, dotenv_settings, Credentials(settings_cls)

    @field_validator("vastops_proxy_consumer_header")
    @classmethod
    def _not_a_credential_header(cls, v: str) -> str:
        # The consumer is stored in the ledger and shown in reports: a header that carries a
        # key (Authorization: Bearer sk-..., a cookie) would put the key there.
        credentials = ("auth", "cookie", "key", "token", "secret", "passw", "credential", "session", "signature")
        if any(word in v.lower() for word in credentials):
            raise ValueError("a header naming the consumer, not one that carries credentials (its value is stored and shown in reports)")
        return v

    @field_validator("vastops_model", "vastops_image")
    @classmethod
    def _one_word(cls, v: str) -> str:
        # Both go into the instance's env and on-start script: no spaces, quotes or shell syntax.
        if not all(c.isalnum() or c in "-_./:@" for c in v):
            raise ValueError("a name like mistralai/Mistral-7B-Instruct-v0.3 or vastai/vllm:TAG (letters, digits, - _ . / : @)")
        return v

    @field_validator("vastops_vllm_args")
    @classmethod
    def _plain_args(cls, v: str) -> str:
        if any(c in v for c in "'\"`$;&|<>\\\n"):
            raise ValueError("plain arguments like --max-model-len 8192 (no quotes or shell syntax)")
        return v.strip()

    @field_validator("vast_health_path")
    @classmethod
    def _path_starts_with_slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("a URL path starting with '/', e.g. /health")
        return v

    @field_validator(
        "vast_api_key", "control_api_key", "vastops_watchdog_key", "vastops_proxy_key", "vast_health_token", "vastops_agent_token"
    )
    @classmethod
    def _header_safe_key(cls, v: SecretStr | None) -> SecretStr | None:
        # Keys travel in HTTP headers, which carry ASCII only; say so now rather than
        # fail inside requests on the first call. The message never shows the key.
        if v is not None and not all(33 <= ord(c) <= 126 for c in v.get_secret_value()):
            raise ValueError("printable ASCII without spaces (keys travel in HTTP headers)")
        return v

    @field_validator("control_api_key")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_CONTROL_KEY_CHARS:
            raise ValueError(f"at least {MIN_CONTROL_KEY_CHARS} characters (generate one: openssl rand -hex 32)")
        return v

    @field_validator("vast_daily_stop_at", mode="before")
    @classmethod
    def _hh_mm(cls, v: Any) -> Any:
        if v is None or isinstance(v, time):
            return v
        text = str(v).strip()
        try:
            hour, minute = (int(part) for part in text.split(":"))
            if len(text.split(":")[1]) != 2:
                raise ValueError
            return time(hour, minute)
        except ValueError:
            raise ValueError("a time of day as HH:MM, e.g. 18:00") from None

    @field_validator("vastops_timezone")
    @classmethod
    def _iana_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone name, e.g. UTC or Europe/Berlin") from None
        return v

    @field_validator("vast_notify_webhook_url")
    @classmethod
    def _webhook_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and "://" not in v.get_secret_value():
            raise ValueError("an http:// or https:// URL (or Apprise URLs with VAST_NOTIFY_FORMAT=apprise)")
        return v

    @field_validator("vast_notify_format")
    @classmethod
    def _notify_format(cls, v: str, info: ValidationInfo) -> str:
        # Checked here, after the URL (the field before): what the URL must be depends on the format.
        url = info.data.get("vast_notify_webhook_url")
        if v == "apprise":
            if importlib.util.find_spec("apprise") is None:  # found, not imported: apprise is slow to load
                raise ValueError('the apprise package for apprise notifications: pip install "vastops[notify]"')
        elif url is not None and not url.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("apprise for a VAST_NOTIFY_WEBHOOK_URL that is not http:// or https:// (slack and json post to a webhook)")
        return v

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.vastops_timezone)

    @field_validator("vast_instance_ids")
    @classmethod
    def _id_list(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if not parts or not all(p.isdigit() and 0 < int(p) <= 2**63 - 1 for p in parts):
            raise ValueError("comma-separated numeric vast.ai instance ids, e.g. 12345,23456")
        twice = sorted({p for p in parts if parts.count(p) > 1})
        if twice:
            raise ValueError(f"each instance once ({', '.join(twice)} is listed twice)")
        return ",".join(str(int(p)) for p in parts)

    @field_validator("vastops_fleet_file")
    @classmethod
    def _fleet_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"a TOML file that exists ({v} {'is a directory' if v.is_dir() else 'does not exist'})")
        return v

    @field_validator("vastops_db")
    @classmethod
    def _not_a_directory(cls, v: Path) -> Path:
        if v.is_dir():
            raise ValueError("a file path for the SQLite ledger, not a directory")
        return v

    @field_validator("vast_state_path", "vast_audit_path")
    @classmethod
    def _writable_file_path(cls, v: Path | None) -> Path | None:
        # Checked here, without writing, so a bad path is a clear error at startup
        # instead of a warning in the log after every change.
        if v is None:
            return v
        if v.is_dir():
            raise ValueError("a file path, not a directory")
        parent = v.parent  # Path("state.json").parent is Path(".")
        if not parent.is_dir():
            raise ValueError(f"a file in an existing directory ({parent} does not exist)")
        if not os.access(parent, os.W_OK) or (v.exists() and not os.access(v, os.W_OK)):
            raise ValueError(f"a file vastops may write ({v} is not writable)")
        return v

    @field_validator("vastops_watchdog_url")
    @classmethod
    def _watchdog_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// base URL, e.g. http://127.0.0.1:8787")
        v = v.strip().rstrip("/")
        return v.removesuffix("/infra/vast")  # the API's base is fine too

    @field_validator("vast_api_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v) < 10:
            raise ValueError("an http:// or https:// base URL, e.g. https://console.vast.ai")
        return v.rstrip("/")

    @property
    def endpoint_port(self) -> int:
        return self.vast_endpoint_port or self.vast_health_port

    @property
    def vast_configured(self) -> bool:
        return self.vast_api_key is not None and bool(self.vast_api_key.get_secret_value())

    def unconfigured_reason(self) -> str | None:
        """Why vastops cannot act on vast.ai, or None when it can."""
        if not self.vast_configured:
            return "VAST_API_KEY is not configured: set it in .env or the environment."
        if self.vast_instance_id is None:
            return "VAST_INSTANCE_ID is not configured: set it in .env or the environment."
        return None

    def target(self) -> VastTarget:
        """The key and instance, or ``NotConfigured`` saying which is missing."""
        reason = self.unconfigured_reason()
        if reason or self.vast_api_key is None or self.vast_instance_id is None:
            raise NotConfigured(reason)
        return VastTarget(self.vast_api_key, self.vast_instance_id)


# The settings that are secrets, by their lowercase names: the file names of their credentials.
SECRET_SETTINGS = tuple(
    name for name, field in Settings.model_fields.items() if field.annotation is SecretStr or SecretStr in get_args(field.annotation)
)


# What a human should be told for each kind of pydantic error.
_EXPECTED = {
    "int_parsing": "a whole number",
    "float_parsing": "a number (fractions like 0.5 are fine)",
    "bool_parsing": "true or false",
    "finite_number": "a finite number",
    "greater_than": "a number greater than {gt}",
    "greater_than_equal": "a number of at least {ge}",
    "less_than_equal": "a number of at most {le}",
}


# The LiteLLM callback's (vastops/integrations/litellm.py, in the gateway's environment,
# which may be the same as vastops'): known names, so the CLI does not call them typos.
INTEGRATION_VARIABLES = ("VASTOPS_MODELS", "VASTOPS_REPORT_TIMEOUT_S")  # VASTOPS_WATCHDOG_URL is a setting (the proxy's)
KNOWN_VARIABLES = tuple(name.upper() for name in Settings.model_fields) + INTEGRATION_VARIABLES


def require_ledger_folder(settings: Settings) -> Settings:
    """The shells' check (CLI, watchdog, dashboard): VASTOPS_DB's folder exists, or ``ConfigError`` naming it.

    A typo in the folder must not quietly start a new, empty ledger somewhere else.
    Code that builds its own ``Settings`` (tests, the demo, which makes its folder)
    still gets the folder created by the ledger.
    """
    parent = settings.vastops_db.parent  # Path("vastops.db").parent is Path(".")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ConfigError(
            f"invalid configuration: VASTOPS_DB: expected a file in an existing directory ({parent} {what}: create it or fix the path)"
        )
    return settings


def check_env_file(env_file: str | os.PathLike) -> None:
    """An env file named on purpose (``--env-file``) must exist: a typo must not mean "no configuration"."""
    path = Path(env_file)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"the env file {os.fspath(env_file)} {what}: check --env-file")


def unknown_variables(env_file: str | os.PathLike | None = ".env") -> list[str]:
    """One warning per VAST_* / VASTOPS_* name vastops does not know, in the environment or the env file.

    A misspelled variable (``VAST_APIKEY``) would otherwise be ignored without a word.
    """
    found: dict[str, str] = {}
    for name in os.environ:
        found.setdefault(name.upper(), "the environment")
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        try:
            names = list(dotenv_values(env_file))
        except (OSError, UnicodeDecodeError):  # load_settings says what is wrong with the file
            names = []
        for name in names:
            found.setdefault(name.upper(), os.fspath(env_file))
    warnings = []
    for name, where in sorted(found.items()):
        if not name.startswith(("VAST_", "VASTOPS_")) or name in KNOWN_VARIABLES:
            continue
        close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1, cutoff=0.8)  # the shared prefix alone scores 0.6
        hint = f"did you mean {close[0]}?" if close else "see .env.example for the names"
        warnings.append(f"{name} (in {where}) is not a vastops variable and is ignored: {hint}")
    return warnings


def load_settings(env_file: str | os.PathLike | None = ".env", **overrides) -> Settings:
    """Read and validate the configuration, or raise ``ConfigError``.

    ``overrides`` are field values that beat the environment (used by tests).
    """
    try:
        return Settings(_env_file=None if env_file is None else os.fspath(env_file), **overrides)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{env_file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): save it as UTF-8"
        ) from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "configuration"
            template = _EXPECTED.get(err["type"])
            if template:
                expected = template.format(**(err.get("ctx") or {}))
            else:
                expected = str(err.get("msg", "a valid value")).removeprefix("Value error, ")
            # The offending input is shown only for non-secret variables.
            shown = "" if any(w in name for w in ("KEY", "PASSWORD", "WEBHOOK", "TOKEN")) else f" (got {err.get('input')!r})"
            problems.append(f"{name}: expected {expected}{shown}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
