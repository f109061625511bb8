"""The VM kit (``vastops instance kit DIR``, vastops/instance/kit.py), checked by the real tools.

Each file is written to a temporary folder and handed to the tool that runs it in real
life, or to the one that checks it: ``nginx -t`` (Debian's nginx) on the health site,
``systemd-analyze verify`` on the unit, the Compose specification's JSON schema on the
compose file (vendored: tests/instance/README.md says from where), ``shellcheck`` on
every script. Each check has a broken copy beside it that must fail, so a check that
passes everything cannot go unnoticed. The tools come from scripts/install-tools; the
tests that run them are marked ``process`` (their fixtures, tests/instance/conftest.py).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml

from helpers import free_port, wait_until
from vastops.errors import InvalidRequest
from vastops.instance.kit import DEFAULT_IMAGE, FILES, KitExists, render_kit, write_kit

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "compose-spec.json"
MODEL = "mistralai/Mistral-7B-Instruct-v0.3"
# A model name no one would use, with everything that breaks careless quoting in YAML,
# Compose (its `$` interpolation), the shell and Markdown.
HOSTILE = 'it\'s a "model" with $HOME, ${X:-y}, `id`, $(rm -rf ~); # and: {a: b} & * !tag'


@pytest.fixture
def kit(tmp_path) -> Path:
    folder = tmp_path / "kit"
    write_kit(folder, model=MODEL, vllm_args="--max-model-len 8192")
    return folder


def compose_of(folder: Path) -> dict:
    return yaml.safe_load((folder / "docker-compose.yml").read_text(encoding="utf-8"))


def uncompose(value: str) -> str:
    """What Compose makes of a value: `$$` is one literal `$`."""
    return value.replace("$$", "$")


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, **kwargs)


# -- the files and the values in them (no tool, no process) ----------------------------------


def test_writes_the_seed_files(tmp_path):
    paths = write_kit(tmp_path / "new" / "kit", model=MODEL)
    assert [p.name for p in paths] == ["docker-compose.yml", "health-nginx.conf", "llm-stack.service", "install.sh", "README.md"]
    assert all(p.is_file() and p.parent == tmp_path / "new" / "kit" for p in paths)
    assert os.access(tmp_path / "new" / "kit" / "install.sh", os.X_OK)
    assert not os.access(tmp_path / "new" / "kit" / "docker-compose.yml", os.X_OK)
    assert not (tmp_path / "new" / "kit" / ".env").exists()


def test_the_values_land_in_every_file(tmp_path):
    write_kit(tmp_path, model="Qwen/Qwen2.5-7B-Instruct", api_port=9100, health_port=9101, vllm_args="--max-model-len 4096 --dtype half")
    services = compose_of(tmp_path)["services"]
    vllm, health = services["vllm"], services["health"]
    assert vllm["image"] == DEFAULT_IMAGE
    assert vllm["entrypoint"] == ["vllm", "serve"]
    assert vllm["command"] == ["Qwen/Qwen2.5-7B-Instruct", "--host", "0.0.0.0", "--port", "9100", "--max-model-len", "4096", "--dtype", "half"]  # fmt: skip
    assert vllm["ports"] == ["9100:9100"]
    assert health["ports"] == ["9101:9101"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in vllm["deploy"]["resources"]["reservations"]["devices"]
    assert vllm["ipc"] == "host" and vllm["restart"] == health["restart"] == "unless-stopped"
    # the model's cache on a named volume: a restart does not download it again
    assert "hf-cache:/root/.cache/huggingface" in vllm["volumes"] and "hf-cache" in compose_of(tmp_path)["volumes"]
    assert vllm["environment"]["HF_HOME"] == "/root/.cache/huggingface"

    site = (tmp_path / "health-nginx.conf").read_text()
    assert "listen 9101;" in site and "proxy_pass http://$vllm_host:9100/health;" in site
    unit = (tmp_path / "llm-stack.service").read_text()
    assert "vLLM on port 9100, /health on port 9101" in unit
    install = (tmp_path / "install.sh").read_text()
    assert "model=Qwen/Qwen2.5-7B-Instruct\n" in install and "api_port=9100\n" in install and "health_port=9101\n" in install
    readme = (tmp_path / "README.md").read_text()
    assert "VAST_HEALTH_PORT=9101" in readme and "VAST_ENDPOINT_PORT=9100" in readme
    assert "curl -i http://localhost:9101/health" in readme and "`Qwen/Qwen2.5-7B-Instruct`" in readme
    assert "sudo ./install.sh" in readme and "HF_TOKEN=hf_..." in readme
    for name in FILES:  # no placeholder left, and none of the defaults
        text = (tmp_path / name).read_text()
        assert "8000" not in text and "8001" not in text, name
        assert "@api_port" not in text and "@model" not in text, name


def test_another_image(tmp_path):
    write_kit(tmp_path, model=MODEL, image="registry.example/vllm:v1@sha256:abc")
    assert compose_of(tmp_path)["services"]["vllm"]["image"] == "registry.example/vllm:v1@sha256:abc"


def test_hostile_values_are_quoted(tmp_path):
    args = "--chat-template '{{ x }} $HOME' --served-model-name \"a b\""
    write_kit(tmp_path, model=HOSTILE, vllm_args=args)
    command = compose_of(tmp_path)["services"]["vllm"]["command"]
    expected = [HOSTILE, "--host", "0.0.0.0", "--port", "8000", "--chat-template", "{{ x }} $HOME", "--served-model-name", "a b"]  # fmt: skip
    assert [uncompose(word) for word in command] == expected
    # every `$` reaches vLLM as it is: Compose would interpolate a single one
    assert "$$HOME" in command[0] and "$$(rm" in command[0]


def test_the_compose_file_matches_the_compose_schema(kit, tmp_path):
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose_of(kit))]
    assert not errors, errors
    write_kit(tmp_path / "hostile", model=HOSTILE, api_port=1, health_port=65535, vllm_args="--a 'b c'")
    assert not list(validator.iter_errors(compose_of(tmp_path / "hostile")))


@pytest.mark.parametrize(
    "broken",
    [
        ("    ports:\n", "    port:\n"),  # a misspelt key
        ("              count: all\n", "              count: all\n              vendor: nvidia\n"),  # no such key in a device
        ("    restart: unless-stopped\n", "    restart: [unless-stopped]\n"),  # a list where a string goes
    ],
)
def test_a_broken_compose_file_fails_the_schema(kit, broken):
    text = (kit / "docker-compose.yml").read_text()
    assert broken[0] in text
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert list(validator.iter_errors(yaml.safe_load(text.replace(broken[0], broken[1], 1))))


def test_existing_files_are_not_overwritten(tmp_path):
    (tmp_path / "README.md").write_text("my notes\n")
    (tmp_path / "llm-stack.service").write_text("[Unit]\n")
    with pytest.raises(KitExists) as raised:
        write_kit(tmp_path, model=MODEL)
    assert "llm-stack.service, README.md" in str(raised.value) and "nothing was written" in str(raised.value)
    assert isinstance(raised.value, InvalidRequest)  # the CLI's one line, exit 2 (vastops/errors.py)
    assert (tmp_path / "README.md").read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "llm-stack.service"]

    write_kit(tmp_path, model=MODEL, overwrite=True)
    assert "vastops instance kit" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "llm-stack.service").read_text() != "[Unit]\n"


def test_a_file_where_the_folder_goes(tmp_path):
    (tmp_path / "kit").write_text("")
    with pytest.raises(InvalidRequest, match="not a folder"):
        write_kit(tmp_path / "kit", model=MODEL)


def test_no_secret_is_written(tmp_path, monkeypatch):
    token = "hf_SECRETsecret0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("VLLM_API_KEY", "vllm-SECRET-key")
    write_kit(tmp_path, model=MODEL)
    for path in tmp_path.rglob("*"):
        data = path.read_bytes()
        assert token.encode() not in data and b"vllm-SECRET-key" not in data, path
    assert not (tmp_path / ".env").exists()
    vllm = compose_of(tmp_path)["services"]["vllm"]
    # the token reaches vLLM from the .env the user writes, and from nowhere else
    assert vllm["env_file"] == [{"path": ".env", "required": False}]
    assert "HF_TOKEN" not in vllm["environment"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"api_port": 8001}, "must differ"),
        ({"api_port": 0}, "api_port: a port"),
        ({"health_port": 70000}, "health_port: a port"),
        ({"health_port": True}, "health_port: a port"),
        ({"model": ""}, "model: a non-empty name"),
        ({"model": "a\nservices: {}"}, "model: a non-empty name"),
        ({"image": "vllm/vllm-openai latest"}, "image: a name"),
        ({"vllm_args": "--port 9000"}, "leave out --port"),
        ({"vllm_args": "--dtype half --api-key=sk-123"}, "VLLM_API_KEY"),
        ({"vllm_args": "--chat-template 'open"}, "vllm_args: No closing quotation"),
        ({"vllm_args": "--a\n--b"}, "vllm_args: vLLM's options on one line"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(tmp_path, kwargs, words):
    with pytest.raises(InvalidRequest, match=words) as raised:
        write_kit(tmp_path / "kit", **{"model": MODEL, **kwargs})
    assert "sk-123" not in str(raised.value)
    assert not (tmp_path / "kit").exists()


# -- the real tools (tests/instance/conftest.py finds them; scripts/install-tools installs them) --


def nginx_test(nginx: str, site: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a main configuration that includes ``site`` as the image's does (inside
    ``http``), with every path nginx writes inside ``tmp_path``: no root needed, nothing shared."""
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'};\nevents {{}}\n"
        f"http {{\n{temp}\n    access_log {prefix / 'access.log'};\n    include {site};\n}}\n"
    )
    return run(nginx, "-t", "-q", "-p", prefix, "-e", prefix / "error.log", "-c", conf)


def test_nginx_accepts_the_health_site(nginx, kit, tmp_path):
    result = nginx_test(nginx, kit / "health-nginx.conf", tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "broken",
    [
        ("    resolver_timeout 2s;\n", "    resolver_timeout 2s\n"),  # a missing `;`
        # the name resolved when nginx loads, where the compose network is not (nor in CI):
        # "host not found in upstream". The variable is what defers it to each request.
        ("proxy_pass http://$vllm_host:8000/health;", "proxy_pass http://vllm:8000/health;"),
        ("        return 404;\n", "        retrun 404;\n"),  # an unknown directive
    ],
)
def test_nginx_refuses_a_broken_site(nginx, kit, tmp_path, broken):
    site = kit / "health-nginx.conf"
    text = site.read_text()
    assert broken[0] in text
    site.write_text(text.replace(broken[0], broken[1], 1))
    result = nginx_test(nginx, site, tmp_path)
    assert result.returncode != 0 and "test failed" in result.stderr, result.stderr


class StubVllm(http.server.ThreadingHTTPServer):
    """vLLM's /health as the site reaches it: answers ``status``, counts every path it is asked."""

    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.paths.append(self.path)
                body = b"engine dead" if stub.status == 503 else b""
                self.send_response(stub.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)


def test_the_health_port_serves_health_and_nothing_else(nginx, processes, tmp_path):
    # The real nginx with the kit's site. One change: the upstream's name becomes 127.0.0.1, as
    # Docker's DNS would have answered for `vllm` (no resolver needed for an address).
    vllm = StubVllm()
    threading.Thread(target=vllm.serve_forever, daemon=True).start()
    try:
        health_port = free_port()
        write_kit(tmp_path / "kit", model=MODEL, api_port=vllm.server_address[1], health_port=health_port)
        site = tmp_path / "kit" / "health-nginx.conf"
        site.write_text(site.read_text().replace("set $vllm_host vllm;", "set $vllm_host 127.0.0.1;"))
        assert nginx_test(nginx, site, tmp_path).returncode == 0
        prefix = tmp_path / "nginx"
        processes.start("-p", prefix, "-e", prefix / "error.log", "-c", prefix / "nginx.conf", "-g", "daemon off;", program=[nginx])
        base = f"http://127.0.0.1:{health_port}"
        wait_until(lambda: _answers(base), timeout=10, what="nginx on the health port")

        assert requests.get(f"{base}/health", timeout=5).status_code == 200
        vllm.status = 503  # vLLM's engine died: the watchdog must see vLLM's own 503, not a rewrite
        answer = requests.get(f"{base}/health", timeout=5)
        assert (answer.status_code, answer.text) == (503, "engine dead")
        asked = len(vllm.paths)
        for path in ("/", "/v1/models", "/metrics", "/health/", "/healthz", "/docs"):
            assert requests.get(f"{base}{path}", timeout=5).status_code == 404, path
        assert requests.post(f"{base}/v1/chat/completions", json={}, timeout=5).status_code == 404
        assert requests.post(f"{base}/health", timeout=5).status_code == 403
        assert vllm.paths[asked:] == []  # none of them reached vLLM
        assert set(vllm.paths) == {"/health"}
    finally:
        vllm.shutdown()
        vllm.server_close()
    # vLLM gone (or still loading): the gateway's 502, which the watchdog reads as "not yet"
    assert requests.get(f"{base}/health", timeout=10).status_code == 502


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:
        return False


def system_root(tmp_path: Path, unit: Path) -> Path:
    """A root for ``systemd-analyze verify --root`` that looks like a host with Docker.

    verify checks that ExecStart's binary exists and that the units it requires load. This
    machine (CI's too) has neither /usr/bin/docker nor docker.service, and installing Docker
    for a check is too much: the root holds the system's own units (sysinit.target and the
    rest of a service's default dependencies), a stub docker.service and a stub
    /usr/bin/docker, and the kit's unit where install.sh puts it.
    """
    root = tmp_path / "root"
    system = next(d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if (d / "sysinit.target").exists())
    shutil.copytree(system, root / system.relative_to("/"), symlinks=True)
    docker = root / "usr" / "bin" / "docker"
    docker.parent.mkdir(parents=True, exist_ok=True)
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    (root / system.relative_to("/") / "docker.service").write_text("[Unit]\nDescription=stub\n[Service]\nExecStart=/usr/bin/docker\n")
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    shutil.copy(unit, root / "etc" / "systemd" / "system" / "llm-stack.service")
    return root


def verify_unit(systemd_analyze: str, unit: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """verify's exit code and what it said about the kit's unit (a bad key is only a warning, exit 0)."""
    root = system_root(tmp_path, unit)
    result = run(systemd_analyze, "verify", f"--root={root}", "/etc/systemd/system/llm-stack.service")
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in lines if "llm-stack" in line]


def test_the_unit_passes_systemd_analyze_verify(systemd_analyze, kit, tmp_path):
    code, said = verify_unit(systemd_analyze, kit / "llm-stack.service", tmp_path)
    assert code == 0 and not said, said
    unit = (kit / "llm-stack.service").read_text()
    for line in ("Type=oneshot", "RemainAfterExit=yes", "Requires=docker.service", "WorkingDirectory=/opt/llm-stack"):
        assert f"\n{line}\n" in unit
    assert "\nExecStart=/usr/bin/docker compose up -d" in unit and "\nExecStop=/usr/bin/docker compose down\n" in unit


@pytest.mark.parametrize(
    "broken",
    [
        ("Type=oneshot", "Type=one-shot"),  # a value systemd ignores (with a warning)
        ("RemainAfterExit=yes", "RemainAfterExits=yes"),  # an unknown key
        ("ExecStart=/usr/bin/docker ", "ExecStart=/usr/bin/dockr "),  # a binary that is not there
        ("ExecStart=/usr/bin/docker ", "ExecStart=docker-compose "),  # not found on systemd's search path
    ],
)
def test_a_broken_unit_fails_systemd_analyze_verify(systemd_analyze, kit, tmp_path, broken):
    unit = kit / "llm-stack.service"
    text = unit.read_text()
    assert broken[0] in text
    unit.write_text(text.replace(broken[0], broken[1], 1))
    code, said = verify_unit(systemd_analyze, unit, tmp_path)
    assert code != 0 or said


def scripts(folder: Path) -> list[Path]:
    """Every script in the kit: whatever starts with a shebang or is named *.sh."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".sh" or p.read_bytes().startswith(b"#!"))


@pytest.mark.parametrize("model", [MODEL, HOSTILE])
def test_every_script_passes_shellcheck(shellcheck, tmp_path, model):
    write_kit(tmp_path, model=model, vllm_args="--max-model-len 8192")
    found = scripts(tmp_path)
    assert [p.name for p in found] == ["install.sh"]
    for script in found:
        result = run(shellcheck, "--norc", script)
        assert result.returncode == 0, result.stdout


def test_a_broken_script_fails_shellcheck(shellcheck, kit):
    script = kit / "install.sh"
    text = script.read_text()
    assert 'install -m 0644 "$here/$file"' in text
    script.write_text(text.replace('install -m 0644 "$here/$file"', "install -m 0644 $here/$file", 1))  # unquoted
    result = run(shellcheck, "--norc", script)
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_the_script_carries_the_model_as_it_is(real_processes, tmp_path):
    # install.sh prints the model: its assignment, run by bash, gives back the exact name
    write_kit(tmp_path, model=HOSTILE)
    line = next(line for line in (tmp_path / "install.sh").read_text().splitlines() if line.startswith("model="))
    result = run("bash", "-c", f'{line}\nprintf %s "$model"')
    assert result.returncode == 0 and result.stdout == HOSTILE
    assert render_kit(model=HOSTILE)["install.sh"] == (tmp_path / "install.sh").read_text()
