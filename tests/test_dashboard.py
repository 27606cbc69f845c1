"""hpo dashboard: read-only optuna-dashboard on localhost, checked in a real browser."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest

import hpo
from hpo.errors import ConfigError
from hpo.reporting import check_host
from hpo.testing import write_study
from tests.conftest import built_once, ended, free_port, wait_for_port


@pytest.fixture()
def served(tmp_path, tmp_path_factory, image_folder):
    """``hpo dashboard`` of its own on a study of two trials, trained once per test run
    (:func:`built_once`): the dashboard only reads it."""
    def build(folder):
        study_file = write_study(folder / "d.toml", data=image_folder, name="browsed")
        hpo.run(study_file, storage=f"sqlite:///{folder / 'd.db'}", n_trials=2,
                artifacts=folder / "artifacts", keep_models=1)

    folder = built_once(tmp_path_factory, "browsed", build)
    storage = f"sqlite:///{folder / 'd.db'}"
    artifacts = folder / "artifacts"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--study", "browsed",
                             "--storage", storage, "--artifacts", str(artifacts), "--port",
                             str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/studies", timeout=2)
            break
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.3)
    yield base, proc
    proc.terminate()
    ended(proc, 30)


def test_the_dashboard_serves_the_study_and_refuses_writes(served):
    base, proc = served
    studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=10))
    assert [s["study_name"] for s in studies["study_summaries"]] == ["browsed"]
    study_id = studies["study_summaries"][0]["study_id"]
    for method, path in (("DELETE", f"/api/studies/{study_id}"),
                         ("POST", "/api/trials/1/tell"),
                         ("POST", f"/api/artifacts/{study_id}/1")):
        request = urllib.request.Request(base + path, method=method, data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 403
    still = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=10))
    assert len(still["study_summaries"]) == 1


def test_the_dashboard_api_returns_each_trials_note(served):
    base, _ = served
    studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=10))
    study_id = studies["study_summaries"][0]["study_id"]
    detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{study_id}?after=0",
                                              timeout=10))
    notes = {t["number"]: t["note"] for t in detail["trials"]}
    assert sorted(notes) == [0, 1]
    for number, note in notes.items():
        assert note["version"] == 1
        assert note["body"].startswith(f"### Trial {number}: COMPLETE\n")
        assert "**val_accuracy** " in note["body"] and "| learning_rate |" in note["body"]
        assert "numbers from epoch 1 (policy final)" in note["body"]


def test_a_trial_page_shows_its_figures_in_a_real_browser(served, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    base, _ = served
    url = f"{base}/dashboard/studies/1/trials"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=20000", "--window-size=1400,2200"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True,
                         text=True, timeout=120).stdout
    assert "browsed" in dom
    assert "Trial 0" in dom or "Trial 1" in dom
    assert "/artifacts/1/" in dom and "training_curves.png" in dom
    target = tmp_path / "dashboard.png"
    subprocess.run([chromium, *flags, f"--screenshot={target}", url], capture_output=True,
                   timeout=120)
    assert target.stat().st_size > 10_000  # a rendered page, not a blank one


def test_a_non_loopback_host_needs_a_token():
    check_host("127.0.0.1", token=None)
    check_host("localhost", token=None)
    with pytest.raises(ConfigError, match="without a token"):
        check_host("0.0.0.0", token=None)
    check_host("0.0.0.0", token="t")


TOKEN = "s3cret-" + "x" * 30


def _start_remote(tmp_path, env_token: str | None) -> tuple[str, subprocess.Popen[str]]:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    optuna.create_study(study_name="remote", storage=storage)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "HPO_DASHBOARD_TOKEN"}
    if env_token:
        env["HPO_DASHBOARD_TOKEN"] = env_token
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--storage", storage,
                             "--host", "0.0.0.0", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_port(port, proc)
    return f"127.0.0.1:{port}", proc


def _get(address: str, path: str, headers: dict[str, str] | None = None
         ) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(address, timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    return ended(proc, 30)


def test_a_remote_dashboard_serves_only_requests_that_carry_its_token(tmp_path):
    address, proc = _start_remote(tmp_path, TOKEN)
    try:
        assert _get(address, "/api/studies").status == 401  # loopback requests included
        assert _get(address, "/api/studies", {"Authorization": "Bearer wrong"}).status == 401
        assert _get(address, "/api/studies?token=wrong").status == 401
        assert _get(address, "/api/studies",
                    {"Authorization": f"Bearer {TOKEN}"}).status == 200
        visit = _get(address, f"/dashboard/?token={TOKEN}&x=1")
        assert visit.status == 302
        assert visit.getheader("Location") == "/dashboard/?x=1"  # the token leaves the URL
        cookie = visit.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and f"hpo_dashboard_token={TOKEN}" in cookie
        assert _get(address, "/api/studies",
                    {"Cookie": f"hpo_dashboard_token={TOKEN}"}).status == 200
        assert _get(address, "/api/studies", {"Cookie": "hpo_dashboard_token=nope"}).status \
            == 401
    finally:
        out, err = _stop(proc)
    assert TOKEN not in out and TOKEN not in err  # given by the user: never printed or logged
    assert "token required" in out


def test_a_generated_token_is_printed_once_and_works_in_a_real_browser(tmp_path):
    address, proc = _start_remote(tmp_path, None)
    try:
        line = proc.stdout.readline()
        assert "token required" in line and "?token=" in line
        token = line.rsplit("?token=", 1)[1].strip()
        assert len(token) >= 32
        assert _get(address, "/api/studies").status == 401
        assert _get(address, "/api/studies",
                    {"Authorization": f"Bearer {token}"}).status == 200
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is not None:  # the browser follows the redirect and keeps the cookie
            flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                     "--virtual-time-budget=15000"]
            dom = subprocess.run([chromium, *flags, "--dump-dom",
                                  f"http://{address}/dashboard/?token={token}"],
                                 capture_output=True, text=True, timeout=120).stdout
            assert "remote" in dom  # the study list, fetched with the cookie
            denied = subprocess.run([chromium, *flags[:-2], f"--user-data-dir="
                                     f"{tmp_path / 'other'}", "--dump-dom",
                                     f"http://{address}/dashboard/"],
                                    capture_output=True, text=True, timeout=120).stdout
            assert "remote" not in denied and "needs its token" in denied
    finally:
        out, err = _stop(proc)
    assert (line + out).count(token) == 1 and token not in err
