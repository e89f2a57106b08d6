"""`handlerbox serve` against a real server on 127.0.0.1 (uvicorn in a thread, httpx client):
every endpoint with good and bad input, results by id, metrics parsed as Prometheus text."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from handlerbox.runtime.outcomes import TIMEOUT_MESSAGE
from handlerbox.runtime.serve.app import create_app
from handlerbox.runtime.serve.config import ServeConfig
from handlerbox.runtime.serve.door import FrontDoor
from handlerbox.runtime.serve.main import bind
from tests.conftest import APPS, EXAMPLES

TOKEN = "t0k-serve-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "supersecret-token-123"

pytestmark = pytest.mark.timeout(60)


class Running:
    """A uvicorn server in a thread, on a socket bound to a free port."""

    def __init__(self, app: Any) -> None:
        sock = bind("127.0.0.1", 0)  # as `handlerbox serve` binds (TCP_NODELAY on each connection)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


def serve(**settings: Any) -> tuple[Running, httpx.Client, FrontDoor]:
    app = create_app(ServeConfig.parse({"tokens": [TOKEN, "another-token"], **settings}))
    running = Running(app)
    return running, httpx.Client(base_url=running.url, headers=AUTH, timeout=30), app.state.door


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, FrontDoor]]:
    data = tmp_path_factory.mktemp("serve")
    running, client, door = serve(
        apps=[str(APPS / "echo")], app_roots=[str(EXAMPLES), str(APPS)],
        database=str(data / "db.sqlite3"), data_dir=str(data / "apps"),
        max_archive_bytes=256 * 1024, max_app_files=40)
    response = client.post("/apps", params={"timeout": "0.5"}, content=_zip(APPS / "serve_hub"),
                           headers={"Content-Type": "application/zip"})
    assert response.status_code == 201, response.text
    yield client, door
    client.close()
    running.stop()


@pytest.fixture(scope="module")
def client(hub: tuple[httpx.Client, FrontDoor]) -> httpx.Client:
    return hub[0]


@pytest.fixture(scope="module")
def installed(client: httpx.Client) -> str:
    response = client.post("/apps/serve_hub/installations", json={
        "account_id": "acc1", "domain": "acme.example.com",
        "iparams": {"channel": "general", "api_token": SECRET}})
    assert response.status_code == 201, response.text
    return "acc1"


def payload(event: str = "onCallCreate", account_id: str = "82918", **data: Any
            ) -> dict[str, Any]:
    return {"account_id": account_id, "domain": "sample.freshcaller.com", "event": event,
            "region": "US", "timestamp": 1583839672, "data": data, "iparams": {}}


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    code: str = response.json()["error"]["code"]
    return code


def _zip(root: Path, prefix: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                name = path.relative_to(root).as_posix()
                archive.write(path, f"{prefix or root.name}/{name}" if prefix != "" else name)
    return out.getvalue()


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return out.getvalue()


def _app_files(name: str = "serve_hub") -> dict[str, bytes]:
    root = APPS / name
    return {f"{name}/{p.relative_to(root).as_posix()}": p.read_bytes()
            for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


# -- health, auth, routing -----------------------------------------------------------------


def test_health_and_readiness_need_no_token(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz"):
        response = httpx.get(client.base_url.join(path))
        assert response.status_code == 200
    assert httpx.get(client.base_url.join("/readyz")).json() == {"ready": True,
                                                                  "state": "ready"}


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "missing_token"),
    ({"Authorization": "Bearer wrong"}, "invalid_token"),
    ({"Authorization": f"Basic {TOKEN}"}, "invalid_token"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "invalid_token"),
])
@pytest.mark.parametrize("path", ["/apps", "/metrics", "/invocations/" + "0" * 32,
                                  "/apps/echo/installations"])
def test_platform_endpoints_refuse_a_missing_or_wrong_token(
        client: httpx.Client, path: str, headers: dict[str, str], code: str) -> None:
    response = httpx.get(client.base_url.join(path), headers=headers)
    assert response.status_code == 401
    assert error_code(response) == code
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_every_configured_token_is_accepted(client: httpx.Client) -> None:
    response = httpx.get(client.base_url.join("/apps"),
                         headers={"Authorization": "Bearer another-token"})
    assert response.status_code == 200


def test_unknown_routes_are_404_json_and_wrong_methods_405_json(client: httpx.Client) -> None:
    missing = client.get("/no/such/thing")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong = client.delete("/healthz")
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]
    assert client.get("/webhooks/abc").status_code == 405


# -- apps ---------------------------------------------------------------------------------


def test_apps_are_listed_with_their_versions(client: httpx.Client) -> None:
    apps = {a["name"]: a for a in client.get("/apps").json()["apps"]}
    assert {"echo", "serve_hub"} <= set(apps)
    hub = client.get("/apps/serve_hub").json()
    assert hub["loaded"] and hub["version"] == apps["serve_hub"]["version"]
    assert "onTicketCreate" in hub["events"] and "lookup" in hub["functions"]
    assert [v["active"] for v in hub["versions"]].count(True) == 1
    assert error_code(client.get("/apps/nope")) == "app_not_found"


def test_the_same_archive_uploaded_again_is_the_same_version(client: httpx.Client) -> None:
    before = client.get("/apps/serve_hub").json()
    again = client.post("/apps", params={"timeout": "0.5"}, content=_zip(APPS / "serve_hub"),
                        headers={"Content-Type": "application/zip"})
    assert again.status_code == 201
    assert again.json()["version"] == before["version"]
    assert len(again.json()["versions"]) == len(before["versions"])


def test_a_tar_gz_upload_with_a_name_loads_and_can_be_rolled_back(client: httpx.Client) -> None:
    files = {name.replace("echo/", "", 1): content for name, content in
             _app_files("echo").items()}
    first = client.post("/apps", params={"name": "echo_copy"}, content=_tar(files),
                        headers={"Content-Type": "application/gzip"})
    assert first.status_code == 201, first.text
    files["server/server.py"] += b"\n\ndef extra(payload):\n    return 1\n"
    second = client.post("/apps", params={"name": "echo_copy"}, content=_tar(files),
                         headers={"Content-Type": "application/gzip"})
    assert second.status_code == 201 and second.json()["version"] != first.json()["version"]
    back = client.post(f"/apps/echo_copy/versions/{first.json()['version']}/activate")
    assert back.status_code == 200 and back.json()["version"] == first.json()["version"]
    assert client.post("/apps/echo_copy/versions/000000000000/activate").status_code == 404
    assert client.delete("/apps/echo_copy").json() == {"name": "echo_copy", "loaded": False}
    assert error_code(client.post("/apps/echo_copy/events", json=payload())) == "app_not_found"
    assert client.delete("/apps/echo_copy").status_code == 404


def test_a_server_path_loads_only_inside_an_app_root(client: httpx.Client,
                                                     tmp_path: Path) -> None:
    loaded = client.post("/apps", json={"path": str(EXAMPLES / "call_logger")})
    assert loaded.status_code == 201 and loaded.json()["name"] == "call_logger"
    outside = client.post("/apps", json={"path": str(tmp_path)})
    assert outside.status_code == 403 and error_code(outside) == "path_not_allowed"
    sneaky = client.post("/apps", json={"path": str(APPS / ".." / ".." / "runtime")})
    assert sneaky.status_code == 403
    assert error_code(client.post("/apps", json={"path": str(APPS), "timeout": 99})) == \
        "invalid_body"


def _zip_members(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16  # a symlink, as Info-ZIP stores one
            archive.writestr(info, "/etc/passwd")
    return out.getvalue()


ARCHIVE_CASES = {
    "zip traversal": (_zip_members({"../evil.json": b"{}"}), 422, "bad_archive"),
    "zip symlink": (_zip_members(_app_files("echo"), symlink="echo/server/x.py"), 422,
                    "bad_archive"),
    "traversal": (_tar({"../evil/manifest.json": b"{}"}), 422, "bad_archive"),
    "absolute": (_tar({"/tmp/evil.json": b"{}"}), 422, "bad_archive"),
    "symlink": (_tar(_app_files("echo"), links={"echo/server/x.py": "/etc/passwd"}), 422,
                "bad_archive"),
    "no manifest": (_tar({"a/readme.txt": b"hi"}), 422, "bad_archive"),
    "top-level manifest, no name": (_tar({"manifest.json": b"{}"}), 422, "app_name_needed"),
    "too many files": (_tar({f"x/f{i}": b"" for i in range(60)}), 422, "bad_archive"),
    "unpacks too big": (_tar({"x/big": b"\0" * (60 << 20)}), 422, "bad_archive"),
    "not an archive": (b"hello, this is not an archive" * 20, 415, "unsupported_archive"),
    "bad app": (_tar({"bad/manifest.json": b'{"events": {"onCallCreate": {"handler": "h"}}}',
                      "bad/server/server.py": b"import os\ndef h(p):\n    return 1\n"}),
                422, "compile_error"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_CASES))
def test_hostile_or_broken_archives_are_refused_with_a_clear_error(
        client: httpx.Client, hub: tuple[httpx.Client, FrontDoor], case: str) -> None:
    data, status, code = ARCHIVE_CASES[case]
    response = client.post("/apps", content=data, headers={"Content-Type": "application/gzip"})
    assert response.status_code == status, response.text
    assert error_code(response) == code
    store = hub[1].apps
    assert not (store.data_dir.parent / "evil").exists()
    assert not any((store.data_dir / "staging").iterdir())


def test_uploads_check_size_and_content_type(client: httpx.Client) -> None:
    big = client.post("/apps", content=b"\0" * (300 * 1024),
                      headers={"Content-Type": "application/zip"})
    assert big.status_code == 413 and error_code(big) == "body_too_large"
    text = client.post("/apps", content=b"hello", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and error_code(text) == "unsupported_media_type"
    bad_timeout = client.post("/apps", params={"timeout": "1000"}, content=b"x",
                              headers={"Content-Type": "application/zip"})
    assert bad_timeout.status_code == 422


# -- installations --------------------------------------------------------------------------


def test_install_hides_secure_iparams_and_refuses_a_second_install(
        client: httpx.Client, installed: str) -> None:
    shown = client.get(f"/apps/serve_hub/installations/{installed}").json()["installation"]
    assert shown["iparams"] == {"channel": "general", "api_token": "********"}
    listed = client.get("/apps/serve_hub/installations").json()["installations"]
    assert [i["account_id"] for i in listed] == [installed]
    again = client.post("/apps/serve_hub/installations", json={
        "account_id": installed, "domain": "acme.example.com", "iparams": {"channel": "x"}})
    assert again.status_code == 409 and error_code(again) == "installation_exists"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"account_id": "b1", "domain": "d.example.com", "iparams": {"channel": "blocked"}},
     409, "setup_blocked"),
    ({"account_id": "b2", "domain": "d.example.com", "iparams": {"channel": "explode"}},
     502, "setup_failed"),
    ({"account_id": "b3", "domain": "d.example.com", "iparams": {}}, 422, "invalid_iparams"),
    ({"account_id": "b4", "domain": "d.example.com", "iparams": {"channel": 5}}, 422,
     "invalid_iparams"),
    ({"account_id": 7, "domain": "d.example.com"}, 422, "invalid_body"),
    ({"account_id": "b/5", "domain": "d.example.com", "iparams": {"channel": "c"}}, 400,
     "installation_error"),
    ({"domain": "d.example.com"}, 422, "invalid_body"),
])
def test_install_maps_each_refusal_to_its_status(client: httpx.Client, body: dict[str, Any],
                                                  status: int, code: str) -> None:
    response = client.post("/apps/serve_hub/installations", json=body)
    assert response.status_code == status, response.text
    assert error_code(response) == code
    if code == "setup_blocked":
        assert response.json()["error"]["message"] == "Channel blocked"


def test_installation_bodies_must_be_json_objects(client: httpx.Client) -> None:
    path = "/apps/serve_hub/installations"
    assert error_code(client.post(path, content=b"{nope", headers={
        "Content-Type": "application/json"})) == "malformed_json"
    assert error_code(client.post(path, content=b"[1]", headers={
        "Content-Type": "application/json"})) == "invalid_body"
    wrong = client.post(path, content=b"account_id=1",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status_code == 415
    assert error_code(client.post("/apps/nope/installations", json={})) == "app_not_found"


def test_update_runs_after_app_update_and_uninstall_can_be_blocked(client: httpx.Client) -> None:
    base = "/apps/serve_hub/installations"
    assert client.post(base, json={"account_id": "u1", "domain": "d.example.com",
                                   "iparams": {"channel": "one"}}).status_code == 201
    updated = client.patch(f"{base}/u1", json={"iparams": {"channel": "sticky"}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["installation"]["iparams"]["channel"] == "sticky"
    result = updated.json()["result"]
    assert result["outcome"] == "ok" and result["event"] == "afterAppUpdate"
    stored = client.get(f"/invocations/{result['id']}").json()
    assert stored["result"]["logs"] == "updated to sticky\n"
    blocked = client.delete(f"{base}/u1")
    assert blocked.status_code == 409 and blocked.json()["error"]["message"] == "Still in use"
    assert client.put(f"{base}/u1", json={"iparams": {"channel": "two"}}).status_code == 200
    gone = client.delete(f"{base}/u1")
    assert gone.status_code == 200 and gone.json()["uninstalled"] is True
    assert error_code(client.delete(f"{base}/u1")) == "installation_not_found"
    assert error_code(client.patch(f"{base}/u1", json={})) == "installation_not_found"
    assert error_code(client.get(f"{base}/u1")) == "installation_not_found"


# -- product events -------------------------------------------------------------------------


def wait_done(client: httpx.Client, invocation_id: str, prefix: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        found: dict[str, Any] = client.get(f"{prefix}/invocations/{invocation_id}").json()
        if found.get("state") == "done":
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.02)


def test_a_product_event_is_accepted_at_once_and_its_result_kept_by_id(
        client: httpx.Client) -> None:
    accepted = client.post("/apps/echo/events", json=payload(n=1))
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["state"] == "queued" and accepted.headers["location"] == body["href"]
    done = wait_done(client, body["id"])
    assert done["status"] == 200 and done["kind"] == "product"
    assert done["result"]["value"] == {"account_id": "82918", "data": {"n": 1}}
    assert done["result"]["logs"] == "echo 82918\n"


@pytest.mark.parametrize(("event", "data", "status", "outcome"), [
    ("onTicketCreate", {"n": 2}, 200, "ok"),
    ("onTicketUpdate", {"id": 9}, 500, "handler_error"),
    ("onTicketDelete", {}, 504, "timeout"),
])
def test_waiting_callers_get_the_result_with_its_status(
        client: httpx.Client, event: str, data: dict[str, Any], status: int,
        outcome: str) -> None:
    response = client.post("/apps/serve_hub/events", params={"wait": "true"},
                           json=payload(event, **data))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["outcome"] == outcome and body["status"] == status
    if outcome == "timeout":
        assert body["message"] == TIMEOUT_MESSAGE
    if outcome == "handler_error":
        assert body["error"] == {"type": "ValueError", "message": "bad ticket 9"}
    stored = client.get(f"/invocations/{body['id']}").json()
    assert stored["status"] == status and stored["result"]["outcome"] == outcome


def test_secure_iparams_are_cut_from_stored_logs(client: httpx.Client) -> None:
    event = payload("onTicketCreate")
    event["iparams"] = {"channel": "c", "api_token": SECRET}
    body = client.post("/apps/serve_hub/events?wait=1", json=event).json()
    logs = client.get(f"/invocations/{body['id']}").json()["result"]["logs"]
    assert SECRET not in logs and "********" in logs


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400,
     "malformed_json"),
    ({"content": b"", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
    ({"json": {**payload(), "region": "XX"}}, 422, "invalid_payload"),
    ({"json": [1, 2]}, 422, "invalid_payload"),
    ({"json": payload("onTicketCreate")}, 404, "unknown_event"),
    ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ({"content": b"x" * (256 * 1024 + 1), "headers": {"Content-Type": "application/json"}},
     413, "body_too_large"),
    ({"json": payload(), "params": {"wait": "maybe"}}, 400, "invalid_query"),
])
def test_bad_product_events_get_clear_json_errors(client: httpx.Client, kwargs: dict[str, Any],
                                                  status: int, code: str) -> None:
    response = client.post("/apps/echo/events", **kwargs)
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert "Traceback" not in response.text


def test_an_invalid_payload_names_each_bad_field(client: httpx.Client) -> None:
    response = client.post("/apps/echo/events", json={**payload(), "region": "XX", "data": 1})
    problems = response.json()["error"]["problems"]
    assert any(p.startswith("payload.region") for p in problems)
    assert any(p.startswith("payload.data") for p in problems)


def test_a_chunked_body_over_the_cap_is_refused_while_it_streams(client: httpx.Client) -> None:
    """No Content-Length: the server answers 413 once the cap is passed, before the body
    ends (the final chunk is never sent here)."""
    url = client.base_url
    with socket.create_connection((url.host, url.port), timeout=10) as conn:
        conn.sendall(b"POST /apps/echo/events HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 8192
        for _ in range(40):  # 320 KB, over the 256 KB cap
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = b""
        while b"}}" not in reply and (data := conn.recv(65536)):
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"body_too_large"' in reply


# -- server methods -----------------------------------------------------------------------


def method(client: httpx.Client, account: str, name: str, **kwargs: Any) -> httpx.Response:
    return client.post(f"/apps/serve_hub/installations/{account}/methods/{name}", **kwargs)


def test_a_server_method_answers_with_its_value(client: httpx.Client, installed: str) -> None:
    response = method(client, installed, "lookup", json={"q": 1})
    assert response.status_code == 200
    assert response.json()["value"] == {"found": {"q": 1}, "account": installed}


def test_a_method_error_chooses_the_status(client: httpx.Client, installed: str) -> None:
    response = method(client, installed, "lookup", json={"missing": True})
    assert response.status_code == 404
    assert response.json()["message"] == "no such thing"
    assert response.json()["outcome"] == "handler_error"


def test_a_method_that_runs_too_long_is_a_504(client: httpx.Client, installed: str) -> None:
    response = method(client, installed, "spin_method", json={})
    assert response.status_code == 504
    assert response.json()["message"] == TIMEOUT_MESSAGE


@pytest.mark.parametrize(("account", "name", "kwargs", "status", "code"), [
    ("acc1", "nope", {"json": {}}, 404, "unknown_method"),
    ("nobody", "lookup", {"json": {}}, 404, "installation_not_found"),
    ("acc1", "lookup", {"json": [1]}, 422, "invalid_body"),
    ("acc1", "lookup", {"content": b"{", "headers": {"Content-Type": "application/json"}},
     400, "malformed_json"),
    ("acc1", "lookup", {"json": {"x": "y" * (100 * 1024)}}, 413, "body_too_large"),
    ("acc1", "lookup", {"content": b"{}", "headers": {"Content-Type": "text/csv"}}, 415,
     "unsupported_media_type"),
])
def test_bad_method_calls_get_clear_json_errors(client: httpx.Client, installed: str,
                                                account: str, name: str,
                                                kwargs: dict[str, Any], status: int,
                                                code: str) -> None:
    response = method(client, account, name, **kwargs)
    assert response.status_code == status, response.text
    assert error_code(response) == code


# -- webhooks -----------------------------------------------------------------------------


def test_a_webhook_runs_the_external_event_without_a_bearer_token(
        client: httpx.Client, installed: str) -> None:
    url = method(client, installed, "make_hook", json={}).json()["value"]["url"]
    path = httpx.URL(url).path
    assert path.startswith("/webhooks/")
    response = httpx.post(client.base_url.join(path), json={"a": 1},
                          headers={"X-Kind": "ping"})
    assert response.status_code == 200, response.text
    assert response.json()["value"] == {"got": {"a": 1}, "kind": "ping"}
    logs = client.get(f"/invocations/{response.json()['id']}").json()["result"]["logs"]
    assert SECRET not in logs and "********" in logs
    text = httpx.post(client.base_url.join(path), content=b"plain words",
                      headers={"Content-Type": "text/plain"})
    assert text.json()["value"]["got"] == "plain words"
    big = httpx.post(client.base_url.join(path), content=b"x" * (100 * 1024 + 1))
    assert big.status_code == 413 and error_code(big) == "body_too_large"


def test_unknown_and_revoked_webhooks_are_404(client: httpx.Client) -> None:
    assert error_code(httpx.post(client.base_url.join("/webhooks/nope"),
                                 content=b"{}")) == "unknown_webhook"
    base = "/apps/serve_hub/installations"
    assert client.post(base, json={"account_id": "w1", "domain": "d.example.com",
                                   "iparams": {"channel": "c"}}).status_code == 201
    path = httpx.URL(method(client, "w1", "make_hook", json={}).json()["value"]["url"]).path
    assert httpx.post(client.base_url.join(path), content=b"{}").status_code == 200
    assert client.delete(f"{base}/w1").status_code == 200
    revoked = httpx.post(client.base_url.join(path), content=b"{}")
    assert revoked.status_code == 404 and error_code(revoked) == "unknown_webhook"


# -- results and metrics --------------------------------------------------------------------


@pytest.mark.parametrize("invocation_id", ["0" * 32, "not-an-id", "A" * 32])
def test_unknown_invocation_ids_are_404(client: httpx.Client, invocation_id: str) -> None:
    response = client.get(f"/invocations/{invocation_id}")
    assert response.status_code == 404 and error_code(response) == "invocation_not_found"


def test_metrics_are_prometheus_text_with_every_family(client: httpx.Client,
                                                       installed: str) -> None:
    assert method(client, installed, "remember", json={"k": 1}).status_code == 200
    client.post("/apps/echo/events?wait=true", json=payload())
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("handlerbox_dispatches", "handlerbox_dispatch_duration_seconds",
                 "handlerbox_queue_depth", "handlerbox_queue_capacity", "handlerbox_workers",
                 "handlerbox_worker_starts", "handlerbox_host_calls",
                 "handlerbox_schedule_lag_seconds", "handlerbox_http_requests",
                 "handlerbox_http_request_duration_seconds", "handlerbox_events_accepted",
                 "handlerbox_pool", "handlerbox_up", "handlerbox_invocations_running"):
        assert name in families, name

    def samples(name: str) -> list[Any]:
        return families[name].samples

    ok = [s for s in samples("handlerbox_dispatches") if s.labels == {
        "kind": "product", "app": "echo", "event": "onCallCreate", "outcome": "ok"}]
    assert ok and ok[0].value >= 1
    assert {s.labels["state"] for s in samples("handlerbox_workers")} >= {"idle", "busy",
                                                                           "spare"}
    assert any(s.labels == {"service": "db", "status": "200"} and s.value >= 2
               for s in samples("handlerbox_host_calls"))
    assert any(s.name == "handlerbox_worker_starts_total" and s.value >= 1
               for s in samples("handlerbox_worker_starts"))
    assert any(s.labels.get("route") == "post_event" for s in samples("handlerbox_http_requests"))
    assert families["handlerbox_dispatch_duration_seconds"].type == "histogram"
    assert samples("handlerbox_up")[0].value == 1


def test_results_expire_after_their_ttl(tmp_path: Path) -> None:
    from handlerbox.runtime.serve.results_store import Accepted, Finished, ResultsStore
    from handlerbox.runtime.services.sqlite import Database

    now = [1000.0]
    database = Database(tmp_path / "db.sqlite3")
    store = ResultsStore(database, ttl=60, clock=lambda: now[0])
    store.write([Accepted("a" * 32, "echo", b"{}", 999.0),
                 Finished("b" * 32, "product", "echo", 999.0, 1000.0, b'{"state": "done"}')])
    queued = store.get("a" * 32)
    assert queued is not None and queued["state"] == "queued"
    assert store.get("b" * 32) == {"state": "done"}
    assert [q.id for q in store.queued()] == ["a" * 32]
    now[0] += 61
    assert store.get("b" * 32) is None
    assert store.purge() == 1
    assert store.get("a" * 32) is not None  # an accepted event never expires unrun
    database.close()


def test_settings_come_from_the_file_the_flags_and_the_environment(tmp_path: Path) -> None:
    import argparse

    from handlerbox.runtime.errors import ConfigError
    from handlerbox.runtime.serve import cli

    (tmp_path / "serve.json").write_text('{"tokens": ["from-file"], "port": 9000}')
    (tmp_path / "tokens.txt").write_text("line-one\n\n line-two \n")
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["serve", "--config", str(tmp_path / "serve.json"), "--port", "9001",
                              "--workers", "3", "--token-file", str(tmp_path / "tokens.txt"),
                              "--app", "a", "--app", "b"])
    found = ServeConfig.parse(cli.settings(args, {cli.TOKENS_ENV: "env-one, env-two"}))
    assert found.port == 9001 and found.engine.workers == 3 and found.apps == ["a", "b"]
    assert [t.get_secret_value() for t in found.tokens] == [
        "from-file", "line-one", "line-two", "env-one", "env-two"]
    assert "from-file" not in repr(found)
    with pytest.raises(ConfigError, match=r"serve\.queue_size"):
        ServeConfig.parse({"tokens": ["x"], "queue_size": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        ServeConfig.parse({"tokens": ["x"], "workers": 2})


# -- queue bound, draining, mounting --------------------------------------------------------


def test_a_full_queue_and_a_draining_server_answer_503_with_retry_after() -> None:
    running, client, door = serve(apps=[str(APPS / "echo")], queue_size=1, consumers=1,
                                  engine={"workers": 1}, retry_after_seconds=3)
    try:
        slow = payload("onAgentUpdate", loops=3 * 10**7)
        first = client.post("/apps/echo/events", json=slow)
        deadline = time.monotonic() + 10
        while door.queue.depth:  # the consumer took the first one
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = client.post("/apps/echo/events", json=slow)
        full = client.post("/apps/echo/events", json=slow)
        waiting = client.post("/apps/echo/events?wait=true", json=slow)
        assert (first.status_code, second.status_code) == (202, 202)
        for refused in (full, waiting):
            assert refused.status_code == 503 and error_code(refused) == "queue_full"
            assert refused.headers["retry-after"] == "3"
        door.begin_drain_soon()
        time.sleep(0.1)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["state"] == "draining"
        drained = client.post("/apps/echo/events", json=payload())
        assert drained.status_code == 503 and error_code(drained) == "draining"
        assert drained.headers["retry-after"] == "3"
    finally:
        client.close()
        running.stop()
    ran = door.metrics.registry.get_sample_value("handlerbox_dispatches_total", {
        "kind": "product", "app": "echo", "event": "onAgentUpdate", "outcome": "ok"})
    assert ran == 2  # the drain ran both accepted events before the server stopped


def test_an_accepted_event_the_engine_is_too_busy_for_is_tried_again() -> None:
    running, client, door = serve(apps=[str(APPS / "echo")], consumers=2, retry_after_seconds=0,
                                  engine={"workers": 1, "max_queue": 0})
    try:
        slow = client.post("/apps/echo/events", json=payload("onAgentUpdate", loops=3 * 10**6))
        deadline = time.monotonic() + 10
        while not door.running:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        quick = client.post("/apps/echo/events", json=payload(n=1))
        for accepted in (slow, quick):
            assert wait_done(client, accepted.json()["id"])["result"]["outcome"] == "ok"
    finally:
        client.close()
        running.stop()
    assert door.metrics.registry.get_sample_value("handlerbox_events_retried_total") >= 1


def test_the_app_mounts_under_a_prefix_with_its_lifespan() -> None:
    served = create_app(ServeConfig.parse({"tokens": [TOKEN], "apps": [str(APPS / "echo")]}))
    host = Starlette(routes=[Mount("/hb", app=served)],
                     lifespan=lambda _: served.router.lifespan_context(served))
    running = Running(host)
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as client:
            assert httpx.get(f"{running.url}/hb/healthz").status_code == 200
            assert httpx.get(f"{running.url}/hb/apps").status_code == 401
            accepted = client.post("/hb/apps/echo/events", json=payload())
            assert accepted.status_code == 202
            assert httpx.URL(accepted.json()["href"]).path.startswith("/hb/invocations/")
            done = wait_done(client, accepted.json()["id"], prefix="/hb")
            assert done["result"]["outcome"] == "ok"
    finally:
        running.stop()
