"""The DEVELOPMENT federation master: ``healthid fedmaster`` (spec §1.2, §4, §9).

A local trust anchor for a development federation, built from a config file
(:mod:`healthid.demo.fedmaster_config`) and a TEST-ONLY signing key. It serves what gematik's
master serves, at the real master's paths:

- ``/.well-known/openid-federation``: its entity configuration, naming the three endpoints
  below in ``metadata.federation_entity`` (spec §1.2: clients discover them there);
- ``/federation/fetch?iss=<master>&sub=<member>``: the subordinate statement about a member
  (its federation ``jwks`` and the metadata the master imposes); errors are the ref master's
  400 body ``{operation, error, error_description, gematik_timestamp, gematik_uuid,
  gematik_code}`` with code 6000 (iss is not this master) or 6011 (unknown subject);
- ``/federation/list``: the members' entity identifiers as a JSON array;
- ``/federation/listidps``: the ``idp-list+jwt`` of spec §9.

It refuses to run in production mode: statements it signs vouch for nobody.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healthid.demo.fedmaster_config import (
    JWKS_FILE,
    FedmasterConfig,
    load_fedmaster_config,
    load_or_create_signing_key,
    master_public_jwks,
)
from healthid.keys import es256
from healthid.protocol.federation import IdpListEntry, sign_idp_list, sign_subordinate_statement
from healthid.protocol.federation.master import MASTER_KID
from healthid.protocol.federation.statements import sign_entity_statement

ENTITY_CONFIGURATION_PATH: Final = "/.well-known/openid-federation"
FETCH_PATH: Final = "/federation/fetch"
LIST_PATH: Final = "/federation/list"
IDP_LIST_PATH: Final = "/federation/listidps"
# spec §8: the master's entity statement lives 1 d on the real RU master (7 d in the ref).
MASTER_CONFIGURATION_LIFETIME_SECONDS: Final = 24 * 60 * 60
ENTITY_STATEMENT_TYPE: Final = "application/entity-statement+jwt;charset=UTF-8"
IDP_LIST_TYPE: Final = "application/jwt"  # spec §9
# spec §1.2 (gsi-fedmaster FedmasterExceptionHandler): the master's error codes.
CODE_ISS_NOT_MASTER: Final = "6000"
CODE_UNKNOWN_SUBJECT: Final = "6011"
ORGANIZATION_NAME: Final = "healthid development federation master (TEST ONLY)"
NO_CACHE: Final = {"Cache-Control": "no-cache"}


class FedmasterRefused(RuntimeError):  # noqa: N818 - the name says the state
    """The development federation master was asked to run in production mode."""


def es256_signer(key: ec.EllipticCurvePrivateKey) -> Callable[[str, bytes], bytes]:
    """A :data:`~healthid.protocol.jose.Signer` for the master's key (raw R || S)."""

    def sign(kid: str, data: bytes) -> bytes:
        if kid != MASTER_KID:
            raise ValueError("the federation master signs only with its own kid")
        return es256.sign(key, data)

    return sign


def _endpoint(config: FedmasterConfig, path: str) -> str:
    return config.entity_id.rstrip("/") + path


def master_configuration_claims(
    config: FedmasterConfig, *, jwks: dict[str, Any], now: int
) -> dict[str, Any]:
    """The master's entity configuration (OpenID Federation §3, spec §1.2)."""
    return {
        "iss": config.entity_id,
        "sub": config.entity_id,
        "iat": now,
        "exp": now + MASTER_CONFIGURATION_LIFETIME_SECONDS,
        "jwks": jwks,
        "metadata": {
            "federation_entity": {
                "federation_fetch_endpoint": _endpoint(config, FETCH_PATH),
                "federation_list_endpoint": _endpoint(config, LIST_PATH),
                "idp_list_endpoint": _endpoint(config, IDP_LIST_PATH),
                "organization_name": ORGANIZATION_NAME,
            }
        },
    }


def _fetch_error(code: str, description: str) -> JSONResponse:
    """The ref master's error body (spec §1.2), HTTP 400."""
    body = {
        "operation": "FETCH",
        "error": "invalid_request",
        "error_description": description,
        "gematik_timestamp": int(time.time()),
        "gematik_uuid": str(uuid.uuid4()),
        "gematik_code": code,
    }
    return JSONResponse(body, status_code=400, headers=NO_CACHE)


def create_fedmaster_app(
    config: FedmasterConfig,
    *,
    signing_key: ec.EllipticCurvePrivateKey,
    production: bool,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The development master's Starlette app; :class:`FedmasterRefused` in production."""
    if production:
        raise FedmasterRefused("the development federation master never runs in production")
    signer = es256_signer(signing_key)
    jwks = master_public_jwks(signing_key)

    async def entity_configuration(_request: Request) -> Response:
        claims = master_configuration_claims(config, jwks=jwks, now=int(clock()))
        token = sign_entity_statement(claims, kid=MASTER_KID, signer=signer)
        return Response(token, media_type=ENTITY_STATEMENT_TYPE, headers=NO_CACHE)

    async def fetch(request: Request) -> Response:
        if request.query_params.get("iss") != config.entity_id:
            return _fetch_error(CODE_ISS_NOT_MASTER, "iss is not this federation master")
        member = config.member(request.query_params.get("sub", ""))
        if member is None:
            return _fetch_error(CODE_UNKNOWN_SUBJECT, "sub is not a member of this federation")
        token = sign_subordinate_statement(
            master_entity_id=config.entity_id,
            subject=member.entity_id,
            subject_jwks=member.jwks,
            metadata=member.metadata,
            now=int(clock()),
            signer=signer,
        )
        return Response(token, media_type=ENTITY_STATEMENT_TYPE, headers=NO_CACHE)

    async def federation_list(request: Request) -> Response:
        entity_type = request.query_params.get("entity_type")
        ids = [
            m.entity_id
            for m in config.members
            if entity_type is None
            or entity_type in m.metadata
            or (entity_type == "openid_provider" and m.idp is not None)
        ]
        return Response(json.dumps(ids), media_type="application/json", headers=NO_CACHE)

    async def idp_list(_request: Request) -> Response:
        entries = [
            IdpListEntry(
                iss=m.entity_id,
                organization_name=m.idp.organization_name,
                logo_uri=m.idp.logo_uri,
                user_type_supported=m.idp.user_type_supported,
                pkv=m.idp.pkv,
            )
            for m in config.members
            if m.idp is not None
        ]
        token = sign_idp_list(
            master_entity_id=config.entity_id, entries=entries, now=int(clock()), signer=signer
        )
        return Response(token, media_type=IDP_LIST_TYPE, headers=NO_CACHE)

    return Starlette(
        routes=[
            Route(ENTITY_CONFIGURATION_PATH, entity_configuration, methods=["GET"]),
            Route(FETCH_PATH, fetch, methods=["GET"]),
            Route(LIST_PATH, federation_list, methods=["GET"]),
            Route(IDP_LIST_PATH, idp_list, methods=["GET"]),
        ]
    )


def run_fedmaster(
    host: str, port: int, config_path: Path, data_dir: Path, *, production: bool
) -> None:
    """Serve the development master (``healthid fedmaster``); refuses production mode."""
    import uvicorn

    if production:
        raise FedmasterRefused("the development federation master never runs in production")
    config = load_fedmaster_config(config_path)
    key = load_or_create_signing_key(data_dir)
    app = create_fedmaster_app(config, signing_key=key, production=production)
    print(
        f"development federation master {config.entity_id} (TEST ONLY) on http://{host}:{port}/\n"
        f"pin its key in development IdPs: HEALTHID_FEDMASTER_URL={config.entity_id} "
        f"HEALTHID_FEDMASTER_JWKS_FILE={(data_dir / JWKS_FILE).resolve()}"
    )
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
