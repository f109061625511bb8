"""`vastops user` and `vastops key`: one line for a mistake, the key shown once, confirmation on a terminal,
and `vastops audit --person`."""

from __future__ import annotations

import io
import json

import pytest

from vastops.cli import main

PASSWORD = "long enough password"


@pytest.fixture
def ledger_env(monkeypatch, tmp_path):
    for name in ("VAST_API_KEY", "VAST_INSTANCE_ID", "CONTROL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VASTOPS_DB", str(tmp_path / "ledger.db"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("getpass.getuser", lambda: "carol")
    return tmp_path


def run(capsys, monkeypatch, *args, stdin: str = "", tty: bool = False) -> tuple[int, str, str]:
    fake = io.StringIO(stdin)
    fake.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", fake)
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_key_is_printed_once_and_listed_by_name_only(ledger_env, capsys, monkeypatch):
    code, out, _ = run(capsys, monkeypatch, "key", "add", "gateway", "--role", "reporter", "--json")
    assert code == 0
    key = json.loads(out)["key"]
    assert key.startswith("vok_")
    code, out, _ = run(capsys, monkeypatch, "key", "list")
    assert code == 0 and "gateway" in out and "reporter" in out and key not in out and "carol" in out
    code, out, _ = run(capsys, monkeypatch, "key", "revoke", "gateway")
    assert code == 0 and "revoked gateway" in out
    code, out, _ = run(capsys, monkeypatch, "key", "list")
    assert "gateway" not in out


def test_mistakes_are_one_line_and_change_nothing(ledger_env, capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, "key", "add", "gateway", "--role", "root")
    assert code == 2 and err.strip() == "vastops: unknown role 'root': choose one of viewer, reporter, operator, admin"
    code, _, err = run(capsys, monkeypatch, "key", "revoke", "nope")
    assert code == 2 and err.strip() == "vastops: there is no key named 'nope'"
    code, _, err = run(capsys, monkeypatch, "user", "add", "alice", "--role", "viewer")  # no terminal, no --password-stdin
    assert code == 2 and "--password-stdin" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, monkeypatch, "user", "add", "alice", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 10 characters" in err
    code, out, _ = run(capsys, monkeypatch, "user", "list")
    assert "alice" not in out and "(no dashboard accounts" in out


def test_a_user_with_a_password_from_stdin_or_for_single_sign_on(ledger_env, capsys, monkeypatch):
    code, out, _ = run(capsys, monkeypatch, "user", "add", "alice", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and "added alice (operator, password set)" in out
    code, out, _ = run(capsys, monkeypatch, "user", "add", "Bob@Example.com", "--role", "viewer", "--sso")
    assert code == 0 and "bob@example.com (viewer, single sign-on only)" in out
    code, out, _ = run(capsys, monkeypatch, "user", "list", "--json")
    assert [(u["name"], u["role"], u["sso_only"]) for u in json.loads(out)] == [
        ("alice", "operator", False),
        ("bob@example.com", "viewer", True),
    ]
    assert PASSWORD not in (ledger_env / "ledger.db").read_bytes().decode("latin-1")


def test_removing_asks_on_a_terminal(ledger_env, capsys, monkeypatch):
    run(capsys, monkeypatch, "key", "add", "ci", "--role", "operator")
    monkeypatch.setattr("builtins.input", lambda question: "n")
    code, _, err = run(capsys, monkeypatch, "key", "revoke", "ci", tty=True)
    assert code == 2 and "nothing was changed" in err
    _, out, _ = run(capsys, monkeypatch, "key", "list")
    assert "ci" in out
    monkeypatch.setattr("builtins.input", lambda question: "y")
    code, _, _ = run(capsys, monkeypatch, "key", "revoke", "ci", tty=True)
    assert code == 0


def test_the_audit_names_who_ran_each_command_and_filters_by_them(ledger_env, capsys, monkeypatch):
    run(capsys, monkeypatch, "key", "add", "ci", "--role", "operator")
    monkeypatch.setattr("getpass.getuser", lambda: "dave")
    run(capsys, monkeypatch, "key", "revoke", "ci")
    code, out, _ = run(capsys, monkeypatch, "audit", "--person", "dave", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["event"], r["actor"], r["person"]) for r in rows] == [("account_removed", "cli", "dave")]
    code, out, _ = run(capsys, monkeypatch, "audit")
    assert "carol" in out and "dave" in out
    code, out, _ = run(capsys, monkeypatch, "audit", "--person", "nobody")
    assert out.strip() == "(no audit entries of nobody)"
