#!/usr/bin/env python3
"""Checks an rbe-proof DSSE envelope with standard tools only: the signature
with securesystemslib (in-toto's DSSE library), the payload with the in-toto
attestation bindings (Statement v1, and the SLSA VSA v1 predicate when it is
one). Nothing from rbe-proof is imported.

Usage: check_attestation.py ENVELOPE.json PUBLIC_KEY.pem
Prints one JSON object (keyid, predicateType, subject, and for a VSA its
verificationResult, verifiedLevels, policy, inputAttestations); exits 1 when
the signature does not verify or the statement does not parse. Runs from the
rig's venv (tests/rig/start-rig.sh installs securesystemslib and
in-toto-attestation there)."""
import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from in_toto_attestation.predicates.vsa.v1 import vsa_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

VSA_V1 = "https://slsa.dev/verification_summary/v1"


def main() -> int:
    env_path, pub_path = sys.argv[1], sys.argv[2]
    with open(pub_path, "rb") as f:
        pem = f.read()
    public = serialization.load_pem_public_key(pem)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keyid = hashlib.sha256(der).hexdigest()
    key = SSlibKey.from_crypto(public, keyid=keyid)
    with open(env_path, "rb") as f:
        envelope = Envelope.from_dict(json.load(f))
    try:
        verified = envelope.verify([key], 1)
    except Exception as e:  # securesystemslib raises VerificationError
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    body = json.loads(envelope.payload)
    pb = json_format.ParseDict(body, statement_pb2.Statement())
    stmt = Statement.copy_from_pb(pb)
    stmt.validate()
    out = {
        "ok": True,
        "keyids": sorted(verified.keys()),
        "payloadType": envelope.payload_type,
        "predicateType": pb.predicate_type,
        "subject": [
            {"name": s.name, "sha256": s.digest["sha256"]} for s in pb.subject
        ],
    }
    if pb.predicate_type == VSA_V1:
        # Strict: an unknown field in the predicate is an error here. The
        # bindings' VSA v1 message declares verifiedLevels a single string
        # while the SLSA spec (which wins, in-toto/attestation#425, fix in
        # PR #429) says array of strings: that one field is checked here.
        predicate = dict(body["predicate"])
        levels = predicate.pop("verifiedLevels")
        if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
            raise ValueError(f"verifiedLevels is not an array of strings: {levels!r}")
        vsa = json_format.ParseDict(predicate, vsa_pb2.VerificationSummary())
        out.update(
            {
                "verifier": vsa.verifier.id,
                "timeVerified": vsa.time_verified.ToJsonString(),
                "resourceUri": vsa.resource_uri,
                "policy": {"uri": vsa.policy.uri, "sha256": vsa.policy.digest["sha256"]},
                "inputAttestations": [
                    {"uri": a.uri, "sha256": a.digest["sha256"]}
                    for a in vsa.input_attestations
                ],
                "verificationResult": vsa.verification_result,
                "verifiedLevels": levels,
            }
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
