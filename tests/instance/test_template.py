"""The instance's template (vastops/instance/template.py): what creates the instance on vast.ai."""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
from pathlib import Path

import pytest

from vastops.cli import main
from vastops.config import load_settings
from vastops.instance import agent
from vastops.instance.template import AGENT_TOKEN_SHOWN, ONSTART_LIMIT, TOKEN_SHOWN, InstanceTemplate

TOKEN = "edge-token-1234567890abcdef"
AGENT_TOKEN = "agent-token-0f9e8d7c6b5a4"
AGENT_FILE = Path(agent.__file__)
IMAGES = ["vastai/vllm:v0.14.0-cuda-12.9", "vllm/vllm-openai:v0.11.0"]


def template(**overrides) -> InstanceTemplate:
    """The template with the agent (VASTOPS_AGENT_TOKEN set) unless ``vastops_agent_token=None``."""
    values = {"vast_health_token": TOKEN, "vastops_agent_token": AGENT_TOKEN, **overrides}
    return InstanceTemplate.from_settings(load_settings(None, **values))


def embedded_agent(script: str) -> bytes:
    """The agent's file as the on-start script writes it: the copy between the heredoc's lines, decoded."""
    found = re.search(r"<<'AGENT'[^\n]*\n(.*?)\nAGENT\n", script, re.DOTALL)
    assert found, "no embedded agent"
    return gzip.decompress(base64.b64decode(found.group(1)))


def test_vast_image_publishes_the_api_and_health_ports_through_the_edge_to_vllm():
    t = template(vast_endpoint_port=8000)
    env = t.body(reveal=True)["env"]
    assert {"-p 8000:8000", "-p 8001:8001"} <= set(env)  # published, as vast's creation call takes ports
    portal = env["PORTAL_CONFIG"].split("|")
    # both ports are vLLM (on 18000) behind the edge: /health on 8001 is vLLM's own
    assert "localhost:8000:18000:/docs:vLLM API" in portal
    assert "localhost:8001:18000:/health:vLLM health" in portal
    assert "--port 18000" in env["VLLM_ARGS"] and "--host 127.0.0.1" in env["VLLM_ARGS"]
    assert env["VLLM_MODEL"] == "mistralai/Mistral-7B-Instruct-v0.3"  # the seed's model
    assert env["WEB_PASSWORD"] == TOKEN  # what the edge checks, what vastops sends
    assert t.body()["disk"] == 150  # the seed's disk
    assert env["HF_HOME"].startswith("/workspace/")  # the model cache survives a stop (container disk)


def test_the_token_is_a_placeholder_unless_revealed_and_hf_token_is_never_in_it():
    shown = template().body()
    assert TOKEN not in json.dumps(shown) and AGENT_TOKEN not in json.dumps(shown)
    assert shown["env"]["WEB_PASSWORD"] == TOKEN_SHOWN
    assert shown["env"]["VASTOPS_AGENT_TOKEN"] == AGENT_TOKEN_SHOWN
    assert template().body(reveal=True)["env"]["VASTOPS_AGENT_TOKEN"] == AGENT_TOKEN
    assert "HF_TOKEN" not in shown["env"]
    assert "HF_TOKEN=" not in shown["onstart"]


@pytest.mark.parametrize("with_agent", [True, False], ids=["agent", "no-agent"])
@pytest.mark.parametrize("image", IMAGES)
def test_on_start_script_is_under_vasts_limit_and_prints_no_secret(image, with_agent):
    script = template(vastops_image=image, vastops_agent_token=AGENT_TOKEN if with_agent else None).onstart()
    assert len(script.encode()) < ONSTART_LIMIT
    assert TOKEN not in script and AGENT_TOKEN not in script  # the script is stored at vast and shown in its console
    assert ("vastops-agent" in script) is with_agent
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "set -x" not in code and "printenv" not in code and "env >>" not in code  # nothing that prints the env


def test_plain_vllm_serves_on_the_api_port_and_guards_v1_with_the_token():
    env = template(vastops_image="vllm/vllm-openai:v0.11.0", vast_endpoint_port=8000).body(reveal=True)["env"]
    assert env["VLLM_API_KEY"] == TOKEN
    assert "PORTAL_CONFIG" not in env and "WEB_PASSWORD" not in env
    assert env["VASTOPS_API_PORT"] == "8000" and env["VASTOPS_HEALTH_PORT"] == "8001"


@pytest.mark.parametrize("image", IMAGES)
def test_the_agent_runs_on_its_published_port_with_its_token_and_the_idle_limit(image):
    t = template(vastops_image=image, vast_endpoint_port=8000, vast_agent_port=8002, vast_auto_shutdown_minutes=12.5)
    env = t.body(reveal=True)["env"]
    assert "-p 8002:8002" in env and env["VASTOPS_AGENT_PORT"] == "8002"
    assert env["VASTOPS_AGENT_TOKEN"] == AGENT_TOKEN and env["VAST_AUTO_SHUTDOWN_MINUTES"] == "12.5"
    inner = 18000 if image.startswith("vastai/") else 8000  # vLLM on the loopback, past vast's edge
    assert env["VASTOPS_AGENT_VLLM_URL"] == f"http://127.0.0.1:{inner}/metrics"
    assert "8002" not in env.get("PORTAL_CONFIG", "")  # published directly: the agent checks its own token


def test_without_an_agent_token_there_is_no_agent():
    env = template(vastops_agent_token=None).body(reveal=True)["env"]
    assert not [k for k in env if "AGENT" in k] and "-p 8002:8002" not in env and "VAST_AUTO_SHUTDOWN_MINUTES" not in env
    assert "No VASTOPS_AGENT_TOKEN is set" in template(vastops_agent_token=None).summary()


@pytest.mark.parametrize("image", IMAGES)
def test_the_embedded_agent_is_the_packages_file_byte_for_byte(image):
    script = template(vastops_image=image).onstart()
    assert embedded_agent(script) == AGENT_FILE.read_bytes()
    if image.startswith("vastai/"):  # started before vast's boot replaces the script
        assert script.index("vastops-agent.py") < script.index("exec entrypoint.sh")
    assert 'nohup python3 -u "$agent" &' in script


def test_the_summary_names_the_agent_and_its_token():
    text = template(vast_agent_port=8002).summary()
    assert "Port 8002: the agent" in text and "<VASTOPS_AGENT_TOKEN>" in text and "VASTOPS_AGENT_TOKEN=<the agent's token>" in text
    assert AGENT_TOKEN not in text


@pytest.mark.parametrize("image", IMAGES)
def test_on_start_script_passes_shellcheck(tool, tmp_path, image):
    path = tmp_path / "onstart.sh"
    path.write_text(template(vastops_image=image).onstart())
    run = subprocess.run([tool("shellcheck"), "-s", "bash", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("image", IMAGES)
def test_on_start_script_is_idempotent(real_processes, tmp_path, image):
    """Run twice (vast runs it on every start) with stand-ins for what it calls: both runs
    succeed, the second appends nothing again, and the agent is written and started once (its
    stand-in lives on, as the agent does, under a command line that names it)."""
    bin_dir, root = tmp_path / "bin", tmp_path / "root"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("entrypoint.sh", "vllm", "python3", "nohup"):
        stub = bin_dir / name
        body = 'exec "$@"' if name == "nohup" else f'echo "{name} $*" >> {calls}'
        if name == "python3":
            # the agent's stand-in lives on (off the captured output, which it would hold open)
            body += '\ncase "$*" in *vastops-agent.py*) exec -a "python3 $*" sleep 120 >/dev/null 2>&1;; esac'
        stub.write_text(f"#!/bin/bash\n{body}\n")
        stub.chmod(0o755)
    script = (
        template(vastops_image=image).onstart().replace("/workspace", str(root)).replace("/etc/environment", str(tmp_path / "environment"))
    )
    (tmp_path / "onstart.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "VLLM_MODEL": "m", "HOME": str(tmp_path)}
    outputs = []
    pidfile = root / "vastops-agent.pid"
    try:
        for _ in range(2):
            run = subprocess.run(["bash", str(tmp_path / "onstart.sh")], env=env, stdout=subprocess.PIPE, text=True, timeout=30)
            assert run.returncode == 0
            outputs.append(run.stdout)
        assert calls.read_text().count("vastops-agent.py") == 1  # started once, not per run
        assert Path(f"/proc/{pidfile.read_text().strip()}/cmdline").read_bytes().count(b"vastops-agent.py") == 1  # and it runs
    finally:
        if pidfile.exists():
            subprocess.run(["kill", pidfile.read_text().strip()], check=False)
    assert (root / "vastops-agent.py").read_bytes() == AGENT_FILE.read_bytes()
    assert "starting the agent" in outputs[0] and "the agent runs already" in outputs[1]
    assert (root / "huggingface").is_dir()
    if image.startswith("vastai/"):
        assert (tmp_path / "environment").read_text().count("HF_HOME=") == 1  # appended once, not per start
        assert calls.read_text().count("entrypoint.sh") == 2  # vast's boot runs each start (it is the services)
    assert "HF_TOKEN is not set" in outputs[0]  # says what is missing, never what is set


def test_cli_template_json_and_text(tmp_path, capsys, monkeypatch):
    env = tmp_path / "t.env"
    env.write_text(f"VAST_HEALTH_TOKEN={TOKEN}\nVAST_ENDPOINT_PORT=8000\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--env-file", str(env), "instance", "template", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["image"].startswith("vastai/vllm") and body["runtype"] == "ssh" and TOKEN not in json.dumps(body)
    assert main(["--env-file", str(env), "instance", "template"]) == 0
    text = capsys.readouterr().out
    assert "Docker options:" in text and "-p 8001:8001" in text and "HF_TOKEN" in text and TOKEN not in text
    assert "No VASTOPS_AGENT_TOKEN is set" in text  # none in this env file: the summary says what is missing
    assert main(["--env-file", str(env), "instance", "template", "--json", "--reveal"]) == 0
    assert json.loads(capsys.readouterr().out)["env"]["WEB_PASSWORD"] == TOKEN
