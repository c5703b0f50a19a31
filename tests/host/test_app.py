from __future__ import annotations

import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from healthid.runtime import build_app
from healthid.settings import load_settings


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    for name in list(os.environ):
        if name.startswith("HEALTHID_"):
            monkeypatch.delenv(name)
    app = build_app(load_settings(data_dir=tmp_path))
    return TestClient(app)


def test_status_says_tee_simulated(client: TestClient) -> None:
    with client:
        body = client.get("/status").json()
        assert body["tee"] == "simulated" and body["mode"] == "development"
        page = client.get("/")
        assert "tee: simulated" in page.text and page.headers["cache-control"] == "no-store"


def test_ready_when_database_store_and_enclave_answer(client: TestClient) -> None:
    with client:
        resp = client.get("/readyz")
        assert resp.status_code == 200
        assert resp.json()["checks"] == {"database": "ok", "ephemeral_store": "ok", "enclave": "ok"}


def test_unknown_path_is_404_not_500(client: TestClient) -> None:
    with client:
        assert client.get("/nope").status_code == 404
