"""Notifications to any channel: Apprise (the optional extra ``vastops[notify]``) beside the built-in webhooks.

With ``VAST_NOTIFY_FORMAT=apprise``, ``VAST_NOTIFY_WEBHOOK_URL`` holds one or more Apprise
URLs (separated by spaces or commas: ``ntfy://``, ``mailto://``, ``tgram://``, ``msteams://``,
``matrix://``, ``slack://``, ``json://`` ..., https://github.com/caronc/apprise/wiki). Each
URL is a *target* of its own: the ``Notifier`` (vastops/watchdog/notify.py) delivers a row
to each, and retries only those that failed, so a working channel never gets a row twice
because another one is down.

Apprise URLs carry their tokens anywhere (a Telegram bot's token is its host), so:

* a target is named by its service alone (``Telegram (apprise)``), never by its URL;
* what goes wrong is said from the exception's type or "not delivered", never its text;
* Apprise's own log, and urllib3's (which logs each request's path), are muted while
  vastops delivers (``quiet``): a context variable, which Apprise copies into the worker
  threads it sends from, and a log filter that drops their records in that context.

Apprise is imported only here, when the watchdog builds its notifier: ``vastops status``
never pays for it. A missing package is a ``ConfigError`` naming the extra
(``vastops.config`` refuses the setting the same way before anything starts).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from vastops.errors import ConfigError
from vastops.watchdog.messages import Message

INSTALL = 'pip install "vastops[notify]"'
MISSING = f"VAST_NOTIFY_FORMAT=apprise needs the apprise package: {INSTALL}"
# The loggers that may quote a target's URL or token: Apprise's, and urllib3's (the request line).
MUTED = ("apprise", "urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")

_delivering: contextvars.ContextVar[bool] = contextvars.ContextVar("vastops_notify_delivering", default=False)
_muted = threading.Lock()
_filters_installed = False


class NotDelivered(Exception):
    """Apprise says the target did not take the notification (why is in its own log, muted: it may quote the URL)."""


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _delivering.get()


@contextmanager
def quiet() -> Iterator[None]:
    """Mute the ``MUTED`` loggers for what runs in this context (and the threads Apprise copies it to)."""
    global _filters_installed
    with _muted:
        if not _filters_installed:
            for name in MUTED:
                logging.getLogger(name).addFilter(_Quiet())
            _filters_installed = True
    token = _delivering.set(True)
    try:
        yield
    finally:
        _delivering.reset(token)


@dataclass
class Target:
    """One Apprise URL: its loggable name, and its send (``Message`` -> delivered or ``NotDelivered``)."""

    name: str
    send: Callable[[Message], None]
    secrets: list[str] = field(default_factory=list)  # the URL and its parts: scrubbed from any text vastops logs


def apprise_targets(urls: str, *, timeout_s: float) -> list[Target]:
    """One ``Target`` per Apprise URL in ``urls``; ``ConfigError`` (naming the variable, never a URL) when one is not understood."""
    try:
        import apprise
    except ImportError:
        raise ConfigError(f"invalid configuration: {MISSING}") from None
    try:
        from apprise.utils.parse import parse_urls
    except ImportError:  # Apprise before 1.9.1: one utils module
        from apprise.utils import parse_urls  # type: ignore[attr-defined,no-redef]

    asset = apprise.AppriseAsset(async_mode=False)  # one service per Apprise: sent in this thread's context
    # Apprise 2 stops waiting for a service after ``timeout`` (a hung SMTP server); Apprise 1 relies on its socket timeouts.
    bounded = "timeout" in inspect.signature(apprise.Apprise.notify).parameters
    targets: list[Target] = []
    with quiet():
        entries = parse_urls(urls)
        if not entries:
            raise ConfigError(
                "invalid configuration: VAST_NOTIFY_WEBHOOK_URL: expected one or more Apprise URLs (VAST_NOTIFY_FORMAT=apprise)"
            )
        for number, url in enumerate(entries, 1):
            client = apprise.Apprise(asset=asset)
            if not client.add(url):
                raise ConfigError(
                    f"invalid configuration: VAST_NOTIFY_WEBHOOK_URL: entry {number} ({_scheme(url)}) is not an Apprise URL "
                    "this installation understands (https://github.com/caronc/apprise/wiki)"
                )
            service = str(getattr(client[0], "service_name", None) or _scheme(url))
            name = f"{service} (apprise{f' #{number}' if len(entries) > 1 else ''})"
            targets.append(Target(name, _sender(client, timeout_s if bounded else None), _parts(url)))
    return targets


def _sender(client: Any, timeout_s: float | None) -> Callable[[Message], None]:
    def send(message: Message) -> None:
        extra = {"timeout": timeout_s} if timeout_s is not None else {}
        with quiet():
            sent = client.notify(body=message.body, title=message.title, notify_type=message.kind, body_format="text", **extra)
        if not sent:
            raise NotDelivered

    return send


def _scheme(url: str) -> str:
    """What may be said of an entry: its scheme (``ntfy://``), or that it has none."""
    scheme, found, _ = url.partition("://")
    return f"{scheme.lower()}://" if found and scheme.isascii() and scheme.replace("+", "").isalnum() else "no scheme"


def _parts(url: str) -> list[str]:
    """The URL and every part of it that may be a secret, longest first (so a part never hides in a longer one)."""
    parts = {url}
    try:
        split = urlsplit(url)
        candidates = [split.netloc, split.hostname or "", split.username or "", split.password or "", split.path, split.query]
        candidates += split.path.split("/") + split.query.split("&")
    except ValueError:
        candidates = []
    for part in candidates:
        if len(part) >= 4:  # a short part ("json", "80") is no secret, and scrubbing it would garble every text
            parts.update({part, unquote(part)})
    return sorted(parts, key=len, reverse=True)
