"""Fixtures of the gsi-testsuite conformance tier: the real app (embedded store, and
PostgreSQL + Redis), the testsuite's relying party and insurer-app installs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import conformance_testlib
import pytest
from conformance_testlib import IDP, FakeRp
from starlette.testclient import TestClient

from healthid.runtime import build_app
from healthid.settings import Settings
from rp_testlib import StubResolver
from stack_testlib import settings_for


@pytest.fixture(params=["embedded", "postgres+redis"])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_for(request, tmp_path, monkeypatch, trusted_proxies=["testclient"])


@pytest.fixture
def rp() -> FakeRp:
    return FakeRp()


@pytest.fixture
def client(settings: Settings, rp: FakeRp) -> Iterator[TestClient]:
    conformance_testlib.import_synthetic_registry(settings)
    with TestClient(build_app(settings, resolver=StubResolver(rp)), base_url=IDP) as c:
        yield c


@pytest.fixture
def secure_element_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices count as secure-element keys (LoA high while the proof is fresh).

    The test wallet can only attest a software key (development), which our policy caps at
    loa-substantial; gematik's cases with acr high stand in a real attested device.
    """
    import healthid.enclave.service as enclave_service
    import healthid.host.wallet_service as wallet_service
    from healthid.protocol.oidc.loa import DEFAULT_POLICY, DeviceKeyClass

    policy = {
        **DEFAULT_POLICY,
        DeviceKeyClass.SOFTWARE: DEFAULT_POLICY[DeviceKeyClass.SECURE_ELEMENT],
    }
    original = wallet_service.derive_assurance

    def derive(**kwargs: object) -> object:
        return original(**kwargs, policy=policy)  # type: ignore[arg-type]

    # the host's view (consent screen, acr_values check) and the enclave's (the ID token)
    monkeypatch.setattr(wallet_service, "derive_assurance", derive)
    monkeypatch.setattr(enclave_service, "derive_assurance", derive)
