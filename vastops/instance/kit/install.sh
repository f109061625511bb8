#!/usr/bin/env bash
# Installs the LLM stack (written by `vastops instance kit`): copies this folder's files to
# /opt/llm-stack, installs llm-stack.service and starts it (it starts again at every boot).
# Idempotent: run it again after changing a file here, and only what changed is recreated.
# Run it as root, from the kit's folder or from anywhere: sudo ./install.sh
set -euo pipefail

# The model's name in single quotes: nothing in it expands (which is what SC2016 warns of)
# shellcheck disable=SC2016
model=@model_shell
api_port=@api_port
health_port=@health_port
target=/opt/llm-stack
unit=llm-stack.service
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

fail() {
  echo "install.sh: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || fail "run it as root: sudo $0"
[[ -x /usr/bin/docker ]] || fail "Docker is missing (/usr/bin/docker): install Docker Engine first (https://docs.docker.com/engine/install/)"
/usr/bin/docker compose version >/dev/null 2>&1 \
  || fail "Docker Compose v2 is missing (docker compose): install the docker-compose-plugin package"
command -v systemctl >/dev/null 2>&1 \
  || fail "there is no systemd here (an ordinary vast.ai instance is a container): use \`vastops instance template\` instead"
command -v nvidia-smi >/dev/null 2>&1 \
  || echo "install.sh: warning: nvidia-smi not found; vLLM needs an NVIDIA GPU and the NVIDIA Container Toolkit" >&2

install -d -m 0755 "$target"
if [[ "$here" != "$target" ]]; then
  for file in docker-compose.yml health-nginx.conf llm-stack.service README.md; do
    install -m 0644 "$here/$file" "$target/$file"
  done
  install -m 0755 "$here/install.sh" "$target/install.sh"
  # The token file: readable by root only, copied as it is, never printed
  if [[ -f "$here/.env" ]]; then
    install -m 0600 "$here/.env" "$target/.env"
  fi
fi
if [[ ! -f "$target/.env" ]]; then
  echo "install.sh: warning: no $target/.env with HF_TOKEN=...: a gated model (such as Mistral) will not download" >&2
fi

install -m 0644 "$here/$unit" "/etc/systemd/system/$unit"
systemctl daemon-reload
systemctl enable "$unit" >/dev/null
# Starts it when it is not running; otherwise `docker compose up -d` recreates only what changed
systemctl reload-or-restart "$unit"

echo "install.sh: $unit is enabled and started: vLLM serves $model on port $api_port"
echo "  the first start downloads the image and the model (many GB); follow it with:"
echo "    docker compose --project-directory $target logs -f vllm"
echo "  ready when this answers 200:  curl -i http://localhost:$health_port/health"
