"""The instance's template (vastops/instance/template.py): what creates the instance on vast.ai."""

from __future__ import annotations

import json
import subprocess

import pytest

from vastops.cli import main
from vastops.config import load_settings
from vastops.instance.template import ONSTART_LIMIT, TOKEN_SHOWN, InstanceTemplate

TOKEN = "edge-token-1234567890abcdef"


def template(**overrides) -> InstanceTemplate:
    return InstanceTemplate.from_settings(load_settings(None, vast_health_token=TOKEN, **overrides))


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
    assert TOKEN not in json.dumps(shown)
    assert shown["env"]["WEB_PASSWORD"] == TOKEN_SHOWN
    assert "HF_TOKEN" not in shown["env"]
    assert "HF_TOKEN=" not in shown["onstart"]


@pytest.mark.parametrize("image", ["vastai/vllm:v0.14.0-cuda-12.9", "vllm/vllm-openai:v0.11.0"])
def test_on_start_script_is_under_vasts_limit_and_prints_no_secret(image):
    script = template(vastops_image=image).onstart()
    assert len(script.encode()) < ONSTART_LIMIT
    assert TOKEN not in script  # the script is stored at vast and shown in its console
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "set -x" not in code and "printenv" not in code and "env >>" not in code  # nothing that prints the env


def test_plain_vllm_serves_on_the_api_port_and_guards_v1_with_the_token():
    env = template(vastops_image="vllm/vllm-openai:v0.11.0", vast_endpoint_port=8000).body(reveal=True)["env"]
    assert env["VLLM_API_KEY"] == TOKEN
    assert "PORTAL_CONFIG" not in env and "WEB_PASSWORD" not in env
    assert env["VASTOPS_API_PORT"] == "8000" and env["VASTOPS_HEALTH_PORT"] == "8001"


@pytest.mark.parametrize("image", ["vastai/vllm:v0.14.0-cuda-12.9", "vllm/vllm-openai:v0.11.0"])
def test_on_start_script_passes_shellcheck(tool, tmp_path, image):
    path = tmp_path / "onstart.sh"
    path.write_text(template(vastops_image=image).onstart())
    run = subprocess.run([tool("shellcheck"), "-s", "bash", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


@pytest.mark.parametrize("image", ["vastai/vllm:v0.14.0-cuda-12.9", "vllm/vllm-openai:v0.11.0"])
def test_on_start_script_is_idempotent(real_processes, tmp_path, image):
    """Run twice (vast runs it on every start) with stand-ins for what it calls: both runs
    succeed, and the second appends nothing again."""
    bin_dir, root = tmp_path / "bin", tmp_path / "root"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("entrypoint.sh", "vllm", "python3", "nohup"):
        stub = bin_dir / name
        body = '"$@"' if name == "nohup" else f'echo "{name} $*" >> {calls}'
        stub.write_text(f"#!/bin/bash\n{body}\n")
        stub.chmod(0o755)
    script = (
        template(vastops_image=image).onstart().replace("/workspace", str(root)).replace("/etc/environment", str(tmp_path / "environment"))
    )
    (tmp_path / "onstart.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "VLLM_MODEL": "m", "HOME": str(tmp_path)}
    outputs = []
    for _ in range(2):
        run = subprocess.run(["bash", str(tmp_path / "onstart.sh")], env=env, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout)
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
    assert main(["--env-file", str(env), "instance", "template", "--json", "--reveal"]) == 0
    assert json.loads(capsys.readouterr().out)["env"]["WEB_PASSWORD"] == TOKEN
