"""``vastops monitoring DIR``: the Prometheus alert rules and the Grafana dashboard vastops ships.

The files are package data in ``monitoring/``, written as they are:

* ``vastops-alerts.yml``: alert rules for Prometheus (``rule_files``): the watchdog down,
  enforcement impaired (``GET /healthz`` degraded), an instance running past its stop, a
  budget over 80 %, vast.ai failing, the instance's agent unreachable, reconciliation off
  by over 1 %. They expect the scrape jobs ``vastops-watchdog`` and ``vastops-proxy``.
* ``vastops-grafana.json``: a dashboard to import into Grafana (its Prometheus is chosen
  on import, as the ``datasource`` variable).

Every metric they query is in docs/contract.md's ``GET /metrics``. tests/monitoring/ runs
``promtool check rules`` and ``promtool test rules`` on the rules, and checks that each
metric the rules and the dashboard query exists in a real scrape of the watchdog and the
proxy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vastops.errors import InvalidRequest

ALERTS = "vastops-alerts.yml"
DASHBOARD = "vastops-grafana.json"
FILES = (ALERTS, DASHBOARD)


class MonitoringExists(InvalidRequest):
    """The folder already holds some of the files and overwriting was not asked for."""


def shipped(name: str) -> str:
    """The text of one shipped file (``FILES``)."""
    from importlib import resources  # here: the CLI's parser imports this module on every command

    return resources.files("vastops.watchdog").joinpath("monitoring", name).read_text(encoding="utf-8")


def write_monitoring(directory: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the rules and the dashboard into ``directory`` (created if missing); their paths.

    ``MonitoringExists`` when a file is there already and ``overwrite`` is false: then nothing is written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InvalidRequest(f"{directory} is not a folder")
    present = [name for name in FILES if (directory / name).exists()]
    if present and not overwrite:
        raise MonitoringExists(f"{directory} already has {', '.join(present)}: nothing was written (--overwrite replaces them)")
    texts = {name: shipped(name) for name in FILES}
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            path = directory / name
            path.write_text(texts[name], encoding="utf-8")
            path.chmod(0o644)
            written.append(path)
    except OSError as exc:  # a read-only place, a file where a folder should be: one line, not a traceback
        raise InvalidRequest(f"cannot write into {directory}: {exc.strerror or exc}") from None
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="where to write the files")
    parser.add_argument("--overwrite", action="store_true", help="replace files that exist")
