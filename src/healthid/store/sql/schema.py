"""The SQL schema. It holds ciphertext, pseudonyms and keyed hashes only, never plaintext
personal data (DESIGN.md "Per-user keys"). Times are Unix seconds (portable across backends).

Changing a table here needs a new Alembic revision in ``migrations/versions``; a test
compares the migrated database with this metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

PSEUDONYM_LEN = 32  # 128 random bits, lowercase hex
DIGEST_LEN = 32  # HMAC-SHA-256 blind index

# One row per policyholder: the random pseudonym, the blind index of the KVNR and the
# policyholder's data key wrapped by the enclave root key. Setting wrapped_key to NULL
# crypto-shreds every record of the policyholder (and every backup of them once the backups
# of this row age out).
#
# Child tables carry no FOREIGN KEY constraints: per-row FK triggers doubled the cost of bulk
# imports on PostgreSQL. The repository is the only writer and inserts and deletes a
# policyholder's rows in one transaction (see policyholders.py).
policyholders = Table(
    "policyholders",
    metadata,
    Column("pseudonym", String(PSEUDONYM_LEN), primary_key=True),
    Column("kvnr_index", LargeBinary(DIGEST_LEN), nullable=False, unique=True),
    Column("root_key_id", String(64), nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

# AEAD records: AAD = (pseudonym, record_type, version), so a record moved to another
# policyholder, another type or another version fails to decrypt.
records = Table(
    "records",
    metadata,
    Column("pseudonym", String(PSEUDONYM_LEN), primary_key=True),
    Column("record_type", String(32), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Further blind indexes (e.g. names + birth date for eID matching). Not unique by design:
# several policyholders may share one, and the enclave refuses ambiguous matches.
lookup_indexes = Table(
    "lookup_indexes",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("digest", LargeBinary(DIGEST_LEN), primary_key=True),
    Column("pseudonym", String(PSEUDONYM_LEN), primary_key=True),
    Index("ix_lookup_indexes_pseudonym", "pseudonym"),
)

# Signing key ring (public halves and schedule only; private keys stay in the key store).
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("backend", String(16), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("activate_at", BigInteger, nullable=False),
    Column("retire_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Index("ix_signing_keys_purpose", "purpose"),
)

# Bound devices: the public device key (not personal data by itself), its key class and the
# proofing that enrolled it. A device belongs to one pseudonym; revoked devices stay for the
# history but can never authenticate again.
devices = Table(
    "devices",
    metadata,
    Column("device_id", String(32), primary_key=True),
    Column("pseudonym", String(PSEUDONYM_LEN), nullable=False),
    Column("key_class", String(16), nullable=False),
    Column("attestation_format", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # SubjectPublicKeyInfo DER, P-256
    Column("sign_count", BigInteger, nullable=False),
    Column("proofing_method", String(8), nullable=False),
    Column("proofed_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    # the enclave's MAC binding the device key to the pseudonym (enclave-vouched sessions);
    # a device without one cannot log in
    Column("binding", LargeBinary(32), nullable=True),
    Index("ix_devices_pseudonym", "pseudonym"),
)

# The policyholder's own history (enrolments, devices, logins), sealed by the enclave under
# the policyholder's data key (record type "history:<event_id>"): the operator sees only
# that something happened at some time, not what.
history = Table(
    "history",
    metadata,
    Column("pseudonym", String(PSEUDONYM_LEN), primary_key=True),
    Column("event_id", String(32), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
)

# The audit trail (healthid.protocol.audit): one hash-chained row per security-relevant event,
# pseudonyms and opaque ids only. ``seq`` is assigned gap-free by the writer under a lock
# (store/sql/audit.py); each row carries its predecessor's hash and its own, so a changed,
# deleted or moved row is found by `healthid audit verify`. Rows are never updated or deleted.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("occurred_at", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("actor", String(PSEUDONYM_LEN), nullable=True),
    Column("subject", String(64), nullable=True),
    Column("client_id", String(512), nullable=True),
    Column("details", Text, nullable=False),  # canonical JSON object of str -> str
    Column("prev_hash", LargeBinary(DIGEST_LEN), nullable=False),
    Column("entry_hash", LargeBinary(DIGEST_LEN), nullable=False),
    Index("ix_audit_log_actor", "actor"),
)

# Checkpoints of the audit chain signed by the enclave's audit key (ES256 JWS over seq, head
# hash and time); the columns repeat what the JWS signs, and verify compares them.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("head_hash", LargeBinary(DIGEST_LEN), nullable=False),
    Column("signed_at", BigInteger, nullable=False),
    Column("jws", Text, nullable=False),
)
