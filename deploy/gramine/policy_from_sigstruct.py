#!/usr/bin/env python3
"""The published enclave policy (``healthid attest verify --policy``) from a signed build.

Reads what ``gramine-sgx-sigstruct-view --output-format json healthid-enclave.sig`` prints
(``mr_enclave``, ``mr_signer``, ``isv_prod_id``, ``isv_svn``, ``debug_enclave``) and writes the
JSON form of :class:`healthid.protocol.tee.policy.TeePolicy`:

- default: this exact build (MRENCLAVE) by this signer (MRSIGNER, ISVPRODID), with
  ``min_isv_svn`` = its ISVSVN; every configured allow list must match;
- ``--signer-only``: any build by this signer with this ISVPRODID and ISVSVN >= this one's
  (spec §4.5.2, the MRSIGNER form: later releases are accepted without a new policy);
- ``--merge OLD``: keep the MRENCLAVEs of a previously published policy as well (a rolling
  upgrade: clients accept the old and the new build until the old one is retired).

A debug enclave is refused: its memory is readable by the host (spec §3.2 step 5). Standard
library only, so it runs on the release machine without healthid installed.

Usage: ``gramine-sgx-sigstruct-view --output-format json X.sig | policy_from_sigstruct.py``
``[--signer-only] [--merge OLD.json] > policy.json``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

MEASUREMENT: Final = re.compile(r"[0-9a-f]{64}")
MAX_U16: Final = 0xFFFF
# healthid.protocol.tee.policy.DEFAULT_TCB_STATUSES and DEFAULT_MAX_AGE_SECONDS.
TCB_STATUSES: Final = ("ConfigurationAndSWHardeningNeeded", "SWHardeningNeeded", "UpToDate")
MAX_AGE_SECONDS: Final = 300


class PolicyError(ValueError):
    """The signed build cannot be published as a production policy."""


def _measurement(sigstruct: Mapping[str, Any], key: str) -> str:
    value = sigstruct.get(key)
    if not isinstance(value, str) or not MEASUREMENT.fullmatch(value.lower()):
        raise PolicyError(f"{key} is not 64 hex digits")
    return value.lower()


def _u16(sigstruct: Mapping[str, Any], key: str) -> int:
    value = sigstruct.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U16:
        raise PolicyError(f"{key} is not a 16-bit unsigned integer")
    return value


def policy_from_sigstruct(
    sigstruct: Mapping[str, Any],
    *,
    signer_only: bool = False,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The policy JSON object for a signed production build."""
    if sigstruct.get("debug_enclave") is not False:
        raise PolicyError("a debug enclave (or one whose debug flag is unknown) is not published")
    mr_signer = _measurement(sigstruct, "mr_signer")
    mr_enclave = _measurement(sigstruct, "mr_enclave")
    isv_prod_id = _u16(sigstruct, "isv_prod_id")
    isv_svn = _u16(sigstruct, "isv_svn")
    mrenclaves = set() if signer_only else {mr_enclave}
    mrsigners = {mr_signer}
    min_isv_svn = isv_svn
    if previous is not None:
        if previous.get("isv_prod_id") != isv_prod_id:
            raise PolicyError("the previous policy is for another ISVPRODID")
        if not signer_only:  # an MRENCLAVE list would make the policy build-specific again
            mrenclaves |= {str(m).lower() for m in previous.get("mrenclave", [])}
        mrsigners |= {str(m).lower() for m in previous.get("mrsigner", [])}
        min_isv_svn = min(isv_svn, int(previous.get("min_isv_svn", 0)))
    return {
        "mrenclave": sorted(mrenclaves),
        "mrsigner": sorted(mrsigners),
        "isv_prod_id": isv_prod_id,
        "min_isv_svn": min_isv_svn,
        "tcb_statuses": list(TCB_STATUSES),
        "allow_debug": False,
        "max_age_seconds": MAX_AGE_SECONDS,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("sigstruct", nargs="?", type=Path, help="JSON file (default: stdin)")
    parser.add_argument("--signer-only", action="store_true", help="MRSIGNER policy only")
    parser.add_argument("--merge", type=Path, metavar="OLD", help="keep OLD's MRENCLAVEs too")
    args = parser.parse_args(argv)
    raw = args.sigstruct.read_text(encoding="utf-8") if args.sigstruct else sys.stdin.read()
    previous = json.loads(args.merge.read_text(encoding="utf-8")) if args.merge else None
    try:
        policy = policy_from_sigstruct(
            json.loads(raw), signer_only=args.signer_only, previous=previous
        )
    except PolicyError as exc:
        print(f"policy_from_sigstruct: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(policy, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
