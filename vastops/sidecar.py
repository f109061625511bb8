"""Placeholder: `vastops watchdog` (issue 3) lands here."""


def add_arguments(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)


def run(args) -> int:
    print("vastops: the watchdog is not built yet")
    return 1
