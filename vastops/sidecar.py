"""`vastops watchdog`: load the sidecar's HTTP shell from the top-level watchdog/ folder and serve it.

The folder is not an importable package (it would shadow Streamlit's `watchdog`
dependency, see DESIGN.md), so its module is loaded by path under the private name
``vastops_watchdog_app``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

from .config import ConfigError, load_settings
from .power import Control, NotConfigured

MODULE_NAME = "vastops_watchdog_app"


def app_path() -> Path:
    return Path(__file__).resolve().parent.parent / "watchdog" / "app.py"


def load_app_module():
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    path = app_path()
    if not path.exists():
        raise FileNotFoundError(f"the watchdog's app is missing: {path}")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def create_app(control: Control, **kwargs):
    return load_app_module().create_app(control, **kwargs)


def add_arguments(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default: 8787)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: the gateway calls /activity constantly)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args) -> int:
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(getattr(args, "env_file", ".env"))
        app = create_app(Control(settings))
    except (ConfigError, NotConfigured) as exc:
        print(f"vastops watchdog: {exc}", file=sys.stderr)
        return 2
    print(f"vastops watchdog: serving http://{args.host}:{args.port}/infra/vast (docs at /docs)", flush=True)
    # uvicorn turns SIGTERM/SIGINT into a clean shutdown, which runs the lifespan's
    # exit: the buffered activity is flushed and a last heartbeat written.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0
