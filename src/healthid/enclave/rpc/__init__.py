"""The enclave RPC: the enclave in its own process behind a narrow, typed, allow-listed RPC.

Length-prefixed deterministic CBOR over a Unix socket (wire format: :mod:`.codec`; value
subset: :mod:`.cbor`; dataclass mappings: :mod:`.schema`; the allow-list: :mod:`.methods`).
The enclave process serves with :class:`~.server.EnclaveServer` (``healthid enclave serve``);
the host calls it through :class:`~.client.RemoteEnclave`, an
:class:`~healthid.enclave.api.EnclaveClient` like the in-process enclave.
"""

from healthid.enclave.rpc.client import RemoteEnclave
from healthid.enclave.rpc.errors import CodecError, FrameTooLarge, RpcError, UnknownMethod
from healthid.enclave.rpc.server import EnclaveServer, EnclaveServerError, serve

__all__ = [
    "CodecError",
    "EnclaveServer",
    "EnclaveServerError",
    "FrameTooLarge",
    "RemoteEnclave",
    "RpcError",
    "UnknownMethod",
    "serve",
]
