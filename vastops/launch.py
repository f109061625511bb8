"""Placeholder: `vastops dashboard` and `vastops demo` (issue 4) land here."""


def add_dashboard_arguments(parser) -> None:
    parser.add_argument("--port", type=int, default=8501)


def add_demo_arguments(parser) -> None:
    pass


def run_dashboard(args) -> int:
    print("vastops: the dashboard is not built yet")
    return 1


def run_demo(args) -> int:
    print("vastops: the demo is not built yet")
    return 1
