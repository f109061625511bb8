"""The docs keep up with the code (in the style of sqlite-utils' tests/core/test_docs.py).

One test per name, so a failure names what is missing: every CLI command, every
configuration variable and every audit event is in docs/contract.md, every variable
is in .env.example, and every file a code comment cites is in the repository.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from vastops.cli import build_parser
from vastops.config import Settings
from vastops.vocabulary import Event

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "contract.md"

SUBCOMMANDS = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
VARIABLES = [name.upper() for name in Settings.model_fields]

# Paths a comment may cite: docs/NAME.md (must exist), and the project's files that live
# outside the repository (must not be cited at all).
CITATION = re.compile(
    r"(?<![\w/.-])docs/[\w.-]+\.md|(?:\.\./)+shared/\S*|/work/shared/\S*|(?<![\w/.-])reference/[\w./-]+|\b(?:SPEC|DESIGN)\.md\b"
)
OUTSIDE = ("SPEC.md", "DESIGN.md", "reference/", "shared/")


@pytest.fixture(scope="module")
def contract() -> str:
    return CONTRACT.read_text(encoding="utf-8")


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_command_is_documented(contract, command):
    assert f"`vastops {command}`" in contract, f"docs/contract.md does not mention `vastops {command}`"


@pytest.mark.parametrize("variable", VARIABLES)
def test_variable_is_documented(contract, variable):
    assert f"`{variable}`" in contract, f"docs/contract.md does not mention `{variable}`"


@pytest.mark.parametrize("variable", VARIABLES)
def test_variable_is_in_env_example(variable):
    # Set or commented out ("# NAME=..."), but there.
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert re.search(rf"^#?\s*{variable}=", text, re.MULTILINE), f".env.example has no line for {variable}"


@pytest.mark.parametrize("event", [e.value for e in Event])
def test_event_is_documented(contract, event):
    assert f"`{event}`" in contract, f"docs/contract.md does not mention `{event}`"


def code_lines() -> list[tuple[str, str]]:
    """(file:line, text) of every scanned code file; this file is skipped (its patterns would match)."""
    files = [p for folder in ("vastops", "pages", "watchdog", "benchmarks", "tests") for p in sorted((ROOT / folder).rglob("*.py"))]
    files += [ROOT / "dashboard.py"] if (ROOT / "dashboard.py").exists() else []
    return [
        (f"{path.relative_to(ROOT)}:{number}", line)
        for path in files
        if path.resolve() != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
    ]


def citations() -> list[tuple[str, str]]:
    """(file:line, cited path) for every citation in the code."""
    return [(where, m.group().rstrip(".,;:)`'\"")) for where, line in code_lines() for m in CITATION.finditer(line)]


def test_no_citation_outside_the_repository():
    # Fails until the code cites docs/contract.md, docs/design.md and docs/vast-api.md instead.
    outside = [f"{where}: {cited}" for where, cited in citations() if any(word in cited for word in OUTSIDE)]
    assert not outside, "cited files that are not in the repository:\n" + "\n".join(outside)


def test_cited_docs_exist():
    missing = [f"{where}: {cited}" for where, cited in citations() if cited.startswith("docs/") and not (ROOT / cited).exists()]
    assert not missing, "cited files that do not exist:\n" + "\n".join(missing)


MODULE_CITATION = re.compile(r"(?<![\w/.-])(?:vastops|tests|pages|benchmarks|scripts)/[\w/]+\.py\b")


def test_cited_modules_exist():
    # After a module moves, a comment or a doc that still names its old path sends a reader nowhere.
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "watchdog" / "README.md"]
    lines = code_lines() + [
        (f"{path.relative_to(ROOT)}:{n}", line) for path in docs for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
    ]
    wheel = "vastops/_dashboard/"  # where the wheel carries dashboard.py and pages/ (pyproject.toml)
    missing = [
        f"{where}: {cited}"
        for where, line in lines
        for cited in MODULE_CITATION.findall(line)
        if not cited.startswith(wheel) and not (ROOT / cited).exists()
    ]
    assert not missing, "cited modules that do not exist:\n" + "\n".join(missing)


def test_cited_sections_exist():
    # "docs/vast-api.md §5" needs a heading "## 5. ..." in that file.
    missing = []
    for where, line in code_lines():
        for doc, number in re.findall(r"(docs/[\w.-]+\.md),? §(\d+)", line):
            path = ROOT / doc
            if path.exists() and not re.search(rf"^## {number}\. ", path.read_text(encoding="utf-8"), re.MULTILINE):
                missing.append(f"{where}: {doc} §{number}")
    assert not missing, "cited sections that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("event", [e.value for e in Event])
def test_event_has_words(event):
    from vastops.vocabulary import EVENT_WORDS

    assert event in EVENT_WORDS, f"vastops/vocabulary.py EVENT_WORDS has no words for {event}"


# -- the map: every module is named, with its job, where a newcomer looks -------------------

PACKAGE = ROOT / "vastops"
MODULES = sorted(
    p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py") and "__pycache__" not in p.parts
)
PACKAGES = sorted(p.parent.relative_to(PACKAGE) for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)


def _docstring(init: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""


def _lists(doc: str, name: str) -> bool:
    """Whether a map's docstring has a line for ``name`` (a module, or ``name/`` for a package)."""
    return re.search(rf"^\s*(?:[-*]\s+)?(?:``)?{re.escape(name)}(?:``)?[\s:]", doc + "\n", re.MULTILINE) is not None


@pytest.mark.parametrize("module", [str(m) for m in MODULES])
def test_every_module_is_on_its_packages_map(module):
    path = Path(module)
    init = PACKAGE / path.parent / "__init__.py"
    assert _lists(_docstring(init), path.stem), f"{init.relative_to(ROOT)}'s docstring has no line for {path.stem}"


@pytest.mark.parametrize("package", [str(p) for p in PACKAGES])
def test_every_package_is_on_the_root_map(package):
    assert _lists(_docstring(PACKAGE / "__init__.py"), f"{package}/"), f"vastops/__init__.py's docstring has no line for {package}/"


@pytest.mark.parametrize("module", [str(m) for m in MODULES])
def test_every_module_is_in_the_design(module):
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    assert f"`vastops/{module}`" in design, f"docs/design.md does not name `vastops/{module}`"


def test_the_root_stays_small():
    root = [m for m in MODULES if len(m.parts) == 1]
    assert len(root) <= 12, f"{len(root)} modules at vastops/'s root: {', '.join(m.stem for m in root)}"
