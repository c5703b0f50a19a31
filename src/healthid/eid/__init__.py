"""BSI TR-03130 eID-Server client and local stand-in (enrolment issue).

- :mod:`~healthid.eid.client`: :class:`EidClient` (useID, getResult polling) over
  :mod:`~healthid.eid.transport` (mTLS, caps, no redirects);
- :mod:`~healthid.eid.session`: the pure session state machine;
- :mod:`~healthid.eid.messages` / :mod:`~healthid.eid.server_messages`: the SOAP messages of
  both sides, validated against our XSD (``schema/``) by :mod:`~healthid.eid.validation`
  after the hardened parser (:mod:`~healthid.eid.xml`);
- :mod:`~healthid.eid.results`: every ResultMinor mapped to an exception of
  :mod:`~healthid.eid.errors`;
- :mod:`~healthid.eid.standin`: a local eID-Server for development and tests only (not
  imported here).
"""

from healthid.eid.client import EidClient, EidClientConfig
from healthid.eid.errors import EidError
from healthid.eid.model import (
    AssurancePolicy,
    Attribute,
    AttributeRequest,
    EidType,
    EidTypeSelection,
    GetResultOutcome,
    LevelOfAssurance,
    PersonalData,
    PreSharedKey,
    UseIdResult,
)
from healthid.eid.session import EidSession
from healthid.eid.transport import TransportConfig

__all__ = [
    "AssurancePolicy",
    "Attribute",
    "AttributeRequest",
    "EidClient",
    "EidClientConfig",
    "EidError",
    "EidSession",
    "EidType",
    "EidTypeSelection",
    "GetResultOutcome",
    "LevelOfAssurance",
    "PersonalData",
    "PreSharedKey",
    "TransportConfig",
    "UseIdResult",
]
