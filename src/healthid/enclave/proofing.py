"""Identity proofing inside the enclave: match proven attributes to one registry entry.

The eGK (C.CH.AUT certificate, verified in ``healthid.protocol.egk``) proves a KVNR; the eID
(BSI TR-03130 getResult) proves names, birth name, date of birth, address and a
card-and-sector-specific restricted ID. The attributes stay in enclave memory under a random
proof id; the host only receives the blind indexes to fetch candidates for, hands the sealed
candidates back, and learns the matched pseudonym — or a refusal that is the same whatever
went wrong, so it reveals nothing about who is insured (issue #3 items 1 and 7).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from healthid.enclave import api
from healthid.enclave.registry.model import (
    Policyholder,
    name_birth_lookup_value,
    normalise_name,
)
from healthid.enclave.vault import VaultError

PROOF_TTL = 600.0  # seconds between proving an identity and matching it
MAX_OPEN_PROOFS = 10_000
MAX_CANDIDATES = 50  # more candidates than this for one proof: refuse (ambiguous)
KVNR_INDEX = "kvnr"
NAME_BIRTH_INDEX = "name_birth"
EID_RID_INDEX = "eid_rid"  # restricted ID: a linking key, changes with a new card


@dataclass(frozen=True, kw_only=True)
class ProvenAttributes:
    """What an identity proof established (plaintext: lives in the enclave only)."""

    method: str  # "eid" | "egk"
    kvnr: str | None = None
    given_names: str | None = None
    family_names: str | None = None
    birth_name: str | None = None
    birth_date: str | None = None  # YYYY-MM-DD, YYYY-MM or YYYY
    postal_code: str | None = None
    restricted_id: str | None = None  # hex


@dataclass(frozen=True, kw_only=True)
class _Proof:
    attributes: ProvenAttributes
    created: float


class Proofing:
    """Open proofs and the matching rules."""

    def __init__(
        self,
        *,
        blind_index: Callable[[str, str], bytes],
        open_policyholder: Callable[[api.SealedPolicyholder], Policyholder],
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = date.today,
    ) -> None:
        self._blind_index = blind_index
        self._open = open_policyholder
        self._clock = clock
        self._today = today
        self._proofs: OrderedDict[str, _Proof] = OrderedDict()

    def begin(self, attributes: ProvenAttributes) -> api.IdentityLookup:
        """Keep the proven attributes; tell the host which blind indexes to look up."""
        self._expire()
        while len(self._proofs) >= MAX_OPEN_PROOFS:
            self._proofs.popitem(last=False)
        proof_id = secrets.token_urlsafe(18)
        self._proofs[proof_id] = _Proof(attributes=attributes, created=self._clock())
        lookups: list[tuple[str, bytes]] = []
        if attributes.kvnr:
            lookups.append((KVNR_INDEX, self._blind_index(KVNR_INDEX, attributes.kvnr)))
        if attributes.restricted_id:
            rid = attributes.restricted_id.lower()
            lookups.append((EID_RID_INDEX, self._blind_index(EID_RID_INDEX, rid)))
        if attributes.family_names and attributes.given_names and attributes.birth_date:
            for family in filter(None, {attributes.family_names, attributes.birth_name}):
                value = name_birth_lookup_value(
                    family, attributes.given_names, attributes.birth_date
                )
                lookups.append((NAME_BIRTH_INDEX, self._blind_index(NAME_BIRTH_INDEX, value)))
        return api.IdentityLookup(
            proof_id=proof_id, method=attributes.method, lookups=tuple(lookups)
        )

    def match(
        self, proof_id: str, candidates: Sequence[api.SealedPolicyholder]
    ) -> api.IdentityMatch:
        """Exactly one insured candidate that fits the proof, or :class:`IdentityNotConfirmed`."""
        self._expire()
        proof = self._proofs.pop(proof_id, None)  # single use
        if proof is None:
            raise api.IdentityNotConfirmed("the proof expired or was already used")
        unique = {c.pseudonym: c for c in candidates}
        if not unique or len(unique) > MAX_CANDIDATES:
            raise api.IdentityNotConfirmed()
        attrs = proof.attributes
        today = self._today()
        fits: list[tuple[api.SealedPolicyholder, Policyholder]] = []
        for sealed in unique.values():
            try:
                holder = self._open(sealed)
            except (VaultError, ValueError, TypeError):
                continue  # a damaged record never matches
            if _fits(attrs, holder) and holder.covered_on(today):
                fits.append((sealed, holder))
        if len(fits) > 1 and attrs.postal_code:
            fits = [(s, h) for s, h in fits if h.postal_code == attrs.postal_code]
        if len(fits) != 1:
            raise api.IdentityNotConfirmed()
        sealed, _ = fits[0]
        links: tuple[tuple[str, bytes], ...] = ()
        if attrs.restricted_id:
            digest = self._blind_index(EID_RID_INDEX, attrs.restricted_id.lower())
            if (EID_RID_INDEX, digest) not in sealed.lookup_indexes:
                links = ((EID_RID_INDEX, digest),)
        return api.IdentityMatch(
            pseudonym=sealed.pseudonym, method=attrs.method, new_lookup_indexes=links
        )

    def _expire(self) -> None:
        now = self._clock()
        while self._proofs:
            key, proof = next(iter(self._proofs.items()))
            if now - proof.created <= PROOF_TTL:
                break
            del self._proofs[key]


def _fits(attrs: ProvenAttributes, holder: Policyholder) -> bool:
    if attrs.method == "egk":
        return attrs.kvnr is not None and secrets.compare_digest(attrs.kvnr, holder.kvnr)
    if not (attrs.given_names and attrs.family_names and attrs.birth_date):
        return False
    families = {normalise_name(attrs.family_names)}
    if attrs.birth_name:
        families.add(normalise_name(attrs.birth_name))
    holder_families = {normalise_name(holder.family_name)}
    if holder.birth_name:
        holder_families.add(normalise_name(holder.birth_name))
    return (
        bool(families & holder_families)
        and normalise_name(attrs.given_names) == normalise_name(holder.given_name)
        and attrs.birth_date == holder.birth_date
    )
