"""The trusted side. The host may import only :mod:`healthid.enclave.api` (architecture test)."""
