"""The insurer's policyholder registry, as seen inside the enclave (plaintext lives here only)."""
