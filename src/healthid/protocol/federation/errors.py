"""Errors of the federation layer: one flat hierarchy under :class:`FederationError`.

Signature, ``typ``, key and lifetime refusals of a single statement are the JOSE layer's
(:mod:`healthid.protocol.jose.errors`) and propagate unchanged; these classes are about how
statements relate to each other and what they contain (OpenID Federation 1.0 §3, §4, §10;
spec §4). Messages never echo statement content (CONVENTIONS 15).
"""

from __future__ import annotations

from typing import ClassVar


class FederationError(ValueError):
    """An entity statement or trust chain is refused."""

    public_reason: ClassVar[str] = "refused"


class InvalidStatement(FederationError):  # noqa: N818 - the name says the state
    """A statement lacks a required claim or a claim has the wrong type."""

    public_reason = "invalid_statement"


class IssuerMismatch(FederationError):  # noqa: N818 - the name says the state
    """``iss`` is not the expected entity (the pinned master, or ``sub`` for a self-statement)."""

    public_reason = "issuer_mismatch"


class SubjectMismatch(FederationError):  # noqa: N818 - the name says the state
    """``sub`` is not the entity being resolved (a statement about someone else)."""

    public_reason = "subject_mismatch"


class KeyNotVouched(FederationError):  # noqa: N818 - the name says the state
    """The leaf's own jwks does not hold the key its superior vouched for and it signed with."""

    public_reason = "key_not_vouched"


class MissingAuthorityHint(FederationError):  # noqa: N818 - the name says the state
    """The leaf's ``authority_hints`` does not name the federation master."""

    public_reason = "missing_authority_hint"


class InvalidMetadata(FederationError):  # noqa: N818 - the name says the state
    """The resolved ``openid_relying_party`` metadata is unusable (no redirect_uris, bad keys)."""

    public_reason = "invalid_metadata"
