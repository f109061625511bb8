"""The seed's compose stack for a vast VM instance or any GPU host with Docker: ``vastops instance kit DIR``.

An ordinary vast instance is a container without Docker or systemd (docs/vast-api.md), so
the seed's recipe (vLLM and an nginx ``/health`` in ``docker compose``, started by
``llm-stack.service``) runs only where both exist: a vast VM instance, or any Linux host
with an NVIDIA GPU. This module writes that recipe as files a user copies there.

The files are templates shipped as package data in ``kit/`` (``@name`` placeholders,
``string.Template`` with ``@`` as its delimiter, so nginx's and the shell's ``$`` stay as
they are). Every value is checked and quoted for the file it lands in: JSON strings for
YAML (with Compose's ``$`` doubled), ``shlex.quote`` for the shell. No secret is ever
written: ``HF_TOKEN`` lives in an ``.env`` the user writes (the compose file reads it).
tests/instance/test_kit.py runs the real tools on the result: ``nginx -t``,
``systemd-analyze verify``, the Compose schema and ``shellcheck``.
"""

from __future__ import annotations

import json
import shlex
from importlib import resources
from pathlib import Path
from string import Template

from vastops.errors import InvalidRequest

# vLLM's own image, pinned: the release vast's vLLM image (vastai/vllm:v0.14.0-cuda-12.9) is built on
DEFAULT_IMAGE = "vllm/vllm-openai:v0.14.0"
HEALTH_IMAGE = "nginx:1.28-alpine"  # a stable nginx; the kit's site replaces its default one

COMPOSE = "docker-compose.yml"
NGINX = "health-nginx.conf"  # the seed's name
UNIT = "llm-stack.service"  # the seed's unit
INSTALL = "install.sh"
README = "README.md"
FILES = (COMPOSE, NGINX, UNIT, INSTALL, README)  # in the order they are written
EXECUTABLE = frozenset({INSTALL})  # every script in the kit (shellcheck runs on each)

# vLLM options the kit sets itself, and why another value would break it.
RESERVED_ARGS = {
    "--port": "the API port is api_port (the compose file publishes it)",
    "--host": "vLLM listens on 0.0.0.0 inside its container",
    "--model": "the model is the model argument",
    "--api-key": "a key would be written into docker-compose.yml: put VLLM_API_KEY=... in the .env instead",
}


class KitExists(InvalidRequest):
    """The folder already holds some of the kit's files and overwriting was not asked for."""


class _KitTemplate(Template):
    # `$` is everywhere in nginx and shell; `@@` writes one `@`
    delimiter = "@"


def write_kit(
    directory: Path,
    *,
    model: str,
    api_port: int = 8000,
    health_port: int = 8001,
    vllm_args: str = "",
    image: str = DEFAULT_IMAGE,
    overwrite: bool = False,
) -> list[Path]:
    """Write the kit's files into ``directory`` (created if missing) and return their paths.

    Raises ``InvalidRequest`` for a bad value and ``KitExists`` (one too) when a file is
    already there and ``overwrite`` is false; either way nothing is written.
    """
    texts = render_kit(model=model, api_port=api_port, health_port=health_port, vllm_args=vllm_args, image=image)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InvalidRequest(f"{directory} is not a folder")
    present = [name for name in FILES if (directory / name).exists()]
    if present and not overwrite:
        raise KitExists(f"{directory} already has {', '.join(present)}: nothing was written (--overwrite replaces them)")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        path = directory / name
        path.write_text(texts[name], encoding="utf-8")
        path.chmod(0o755 if name in EXECUTABLE else 0o644)
        written.append(path)
    return written


def render_kit(
    *, model: str, api_port: int = 8000, health_port: int = 8001, vllm_args: str = "", image: str = DEFAULT_IMAGE
) -> dict[str, str]:
    """The kit's files as ``{name: text}``, each value checked and quoted for its file."""
    _check_port("api_port", api_port)
    _check_port("health_port", health_port)
    if api_port == health_port:
        raise InvalidRequest(f"api_port and health_port must differ (both are {api_port})")
    _check_text("model", model)
    _check_text("image", image)
    if any(c.isspace() for c in image):
        raise InvalidRequest(f"image: a name like {DEFAULT_IMAGE}, without spaces")
    args = _split_args(vllm_args)
    command = [model, "--host", "0.0.0.0", "--port", str(api_port), *args]
    values = {
        "api_port": str(api_port),
        "health_port": str(health_port),
        "image": _yaml_string(image),
        "health_image": _yaml_string(HEALTH_IMAGE),
        "command": "[" + ", ".join(_yaml_string(word) for word in command) + "]",
        "model_shell": shlex.quote(model),
        "model_md": model.replace("`", "'"),  # inside a code span
        "image_md": image.replace("`", "'"),
    }
    folder = resources.files("vastops.instance").joinpath("kit")
    return {name: _KitTemplate(folder.joinpath(name).read_text(encoding="utf-8")).substitute(values) for name in FILES}


def _check_port(name: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidRequest(f"{name}: a port from 1 to 65535 (got {port!r})")


def _check_text(name: str, value: str) -> None:
    # Printable: no newline or control character can end a YAML scalar, a comment or a shell word early.
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise InvalidRequest(f"{name}: a non-empty name on one line (got {value!r})")


def _split_args(vllm_args: str) -> list[str]:
    if not isinstance(vllm_args, str) or not vllm_args.strip().isprintable():
        raise InvalidRequest("vllm_args: vLLM's options on one line, e.g. --max-model-len 8192")
    try:
        args = shlex.split(vllm_args)
    except ValueError as e:
        raise InvalidRequest(f"vllm_args: {e} in {vllm_args!r}") from None
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in RESERVED_ARGS:
            raise InvalidRequest(f"vllm_args: leave out {option}: {RESERVED_ARGS[option]}")
    return args


def _yaml_string(value: str) -> str:
    # A JSON string is a YAML double-quoted scalar. Compose interpolates `$` in every value;
    # `$$` is its escape for one literal `$`.
    return json.dumps(value.replace("$", "$$"), ensure_ascii=False)
