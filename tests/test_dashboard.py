"""hpo dashboard: read-only optuna-dashboard on localhost, checked in a real browser."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import hpo
from hpo.errors import ConfigError
from hpo.reporting import check_host
from hpo.testing import write_study


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def served(tmp_path, image_folder):
    study_file = write_study(tmp_path / "d.toml", data=image_folder, name="browsed")
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    artifacts = tmp_path / "artifacts"
    hpo.run(study_file, storage=storage, n_trials=2, artifacts=artifacts, keep_models=1)
    port = _free_port()
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
    proc.communicate(timeout=30)


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


def test_only_loopback_unless_remote_is_allowed():
    check_host("127.0.0.1", allow_remote=False)
    check_host("localhost", allow_remote=False)
    with pytest.raises(ConfigError, match=r"add allow_remote \(behind"):
        check_host("0.0.0.0", allow_remote=False)
    check_host("0.0.0.0", allow_remote=True)
