"""Fixtures for the attestation tests: TEST PKIs (generated once per session) and configs."""

from __future__ import annotations

import pytest
from attestation_factory import (
    BUNDLE_ID,
    PACKAGE_NAME,
    SIGNING_CERT_DIGEST,
    TEAM_ID,
    AndroidPki,
    ApplePki,
)

from healthid.protocol.attestation import AndroidConfig, AppleConfig


@pytest.fixture(scope="session")
def apple_pki() -> ApplePki:
    return ApplePki.create()


@pytest.fixture(scope="session")
def android_pki() -> AndroidPki:
    return AndroidPki.create()


@pytest.fixture
def apple_config(apple_pki: ApplePki) -> AppleConfig:
    return AppleConfig(
        team_id=TEAM_ID,
        bundle_id=BUNDLE_ID,
        roots=(apple_pki.root.certificate,),
        production=True,
    )


@pytest.fixture
def android_config(android_pki: AndroidPki) -> AndroidConfig:
    return AndroidConfig(
        roots=(android_pki.root.certificate,),
        package_names=frozenset({PACKAGE_NAME}),
        signing_cert_digests=frozenset({SIGNING_CERT_DIGEST}),
    )
