"""The API docs page (vastops/watchdog/app.py): Swagger UI 5 with every file from the watchdog, none from another host.

FastAPI's own ``/docs`` loads Swagger UI from a CDN: a blank page on an air-gapped
operations host. The page is fetched and every URL it loads is checked: relative to the
watchdog (or under its mount), and answering 200 with the file.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vastops.watchdog.app import ASSETS, DOCS_ASSETS, create_app
from vastops.watchdog.mount import mount_vastops

# Whatever the page loads or hands Swagger UI: src=, href=, and the document's url.
LOADED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl\s*:\s*["']([^"']+)["']""")
MEDIA = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def loaded(page: str) -> list[str]:
    return [a or b for a, b in LOADED.findall(page)]


def check_page(client: TestClient, docs: str, root: str) -> None:
    answer = client.get(docs)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    urls = loaded(page)
    assert urls, page
    outside = [u for u in urls if re.match(r"(?i)^(?:[a-z][a-z0-9+.-]*:)?//", u)]
    assert outside == [], f"the docs page loads from another host: {outside}"
    assert not re.search(r"(?i)https?://", page), "no absolute URL at all on the page"
    assert set(urls) == {
        f"{root}/docs/assets/swagger-ui-bundle.js",
        f"{root}/docs/assets/swagger-ui.css",
        f"{root}/docs/assets/favicon-32x32.png",
        f"{root}/openapi.json",
    }
    assert '"validatorUrl": null' in page  # no badge fetched from validator.swagger.io
    for url in urls:
        got = client.get(url)
        assert got.status_code == 200, url
        assert len(got.content) > 500, url
        if url.endswith("openapi.json"):
            assert got.json()["openapi"].startswith("3.1")  # what only Swagger UI 5 renders
        else:
            suffix = url[url.rfind(".") :]
            assert got.headers["content-type"].startswith(MEDIA[suffix]), url
            assert got.content == (DOCS_ASSETS / url.rsplit("/", 1)[1]).read_bytes()


@pytest.fixture
def api(control):
    with TestClient(create_app(control, run_watch=False)) as client:
        yield client


def test_the_docs_page_loads_everything_from_the_watchdog(api):
    check_page(api, "/docs", "")


def test_swagger_ui_is_version_5_and_its_licence_travels_with_it():
    bundle = (DOCS_ASSETS / "swagger-ui-bundle.js").read_text(encoding="utf-8")
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle)
    assert version is not None and version.group(1) == "5"  # 4.x cannot render OpenAPI 3.1
    assert f"swagger-ui-dist` {'.'.join(version.groups())}" in (DOCS_ASSETS / "README.md").read_text(encoding="utf-8")
    assert "Apache License" in (DOCS_ASSETS / "LICENSE").read_text(encoding="utf-8")
    assert (DOCS_ASSETS / "NOTICE").is_file() and (DOCS_ASSETS / "swagger-ui-bundle.js.LICENSE.txt").is_file()
    assert set(ASSETS) <= {p.name for p in DOCS_ASSETS.iterdir()}


def test_only_the_listed_files_are_served_and_there_is_no_redoc(api):
    for name in ("LICENSE", "README.md", "..%2Fapp.py", "nope.js"):
        assert api.get(f"/docs/assets/{name}").status_code == 404, name
    assert api.get("/docs/assets/../app.py").status_code == 404
    assert api.get("/redoc").status_code == 404  # ReDoc's script would come from a CDN
    assert api.get("/docs/assets/swagger-ui.css").headers["cache-control"] == "public, max-age=86400"


def test_the_docs_need_no_key_and_are_not_in_the_api_document(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert not any(p.startswith("/docs") for p in paths)
    assert "/infra/vast/status" in paths


def test_mounted_the_docs_page_loads_everything_from_under_the_mount(control):
    host = FastAPI()
    mount_vastops(host, control=control)
    with TestClient(host) as client:
        check_page(client, "/infra/vast/docs", "/infra/vast")
        assert client.get("/infra/vast/openapi.json").json()["servers"] == [{"url": "/infra/vast"}]


# -- a real browser: Swagger UI 5 renders the 3.1 document with nothing from outside --------------


@pytest.fixture
def served(control):
    """The watchdog's app under a real uvicorn on a free port (in a thread)."""
    import threading
    import time

    import uvicorn

    from helpers import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(control, run_watch=False), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_a_browser_renders_every_operation_with_no_request_to_another_host(browser, served):
    page = browser.new_page()
    outside: list[str] = []
    errors: list[str] = []

    def only_the_watchdog(route):
        if route.request.url.startswith(served + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_watchdog)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(served + "/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    rendered = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/infra/vast/status" in [p.replace("\u200b", "") for p in rendered]
    assert page.locator(".errors-wrapper").count() == 0  # the 3.1 document parsed (Swagger UI 4 shows an error here)
    assert page.locator(".version-stamp").inner_text().strip() == "OAS 3.1"
    assert outside == [] and errors == []
    page.close()
