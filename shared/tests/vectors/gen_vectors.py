"""Generate cross-implementation test vectors for shared::token from Python's itsdangerous.

Run from the workspace root (/work/main):

    pip install itsdangerous==2.2.0
    python3 shared/tests/vectors/gen_vectors.py

It (re)writes shared/tests/vectors/itsdangerous.json next to this script. The output is
deterministic: timestamps are fixed through a TimestampSigner subclass passed as `signer=`, and
secrets and payloads are constants below, so re-running it must produce an identical file (a diff
means itsdangerous or zlib changed behaviour, which is exactly what these vectors guard against).

The Rust test shared/tests/token_vectors.rs checks, for every vector, that Rust verifies the
Python token and that Rust signing the same JSON bytes at the same timestamp produces the
byte-identical token (so Python accepts Rust's tokens).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from importlib.metadata import version
from pathlib import Path

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from itsdangerous.serializer import Serializer

ITSDANGEROUS_VERSION = version("itsdangerous")
assert ITSDANGEROUS_VERSION.startswith("2.2."), (
    f"itsdangerous 2.2.x required, found {ITSDANGEROUS_VERSION}; "
    "pip install itsdangerous==2.2.0"
)

OUT = Path(__file__).resolve().parent / "itsdangerous.json"

# Test-only secrets (>= 32 bytes, the Rust MIN_SECRET_LEN). Never use these anywhere real.
SECRETS = [
    "test-secret-one-0123456789abcdefghijklmnopqrstuv",
    "test-secret-two-ZYXWVUTSRQPONMLKJIHGFEDCBA987654",
]
SALTS = ["password-reset", "email-verify", "account-lock"]
DIGESTS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}

PAYLOADS = [
    # Shape of shared::token::Claims (field order uid, pv, gen, n).
    {"uid": "0190a5b2-7c4e-7d3a-9f1e-2b3c4d5e6f70", "pv": 1, "gen": 3, "n": "abc"},
    {},
    {
        "uid": "6f1c2e3d-4b5a-4978-8899-aabbccddeeff",
        "pv": 42,
        "gen": 9007199254740993,
        "n": "q-8_Zx0Ab9cD1eF2gH3iJw",
    },
    {"s": "quote \" backslash \\ slash / tab \t newline \n ctrl \u0001 end", "neg": -7},
    # Long and repetitive: itsdangerous zlib-compresses this one (token starts with ".").
    {"list": ["repeat-me-please"] * 60, "note": "compressible " * 20},
]
COMPRESSIBLE_INDEX = 4

TIMESTAMPS = [1_700_000_000, 1_234_567_890, 4_102_444_800, 1_000]


def fixed_signer(ts: int) -> type[TimestampSigner]:
    class FixedTimestampSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return ts

    return FixedTimestampSigner


def serializer(secret_keys, salt: str, digest: str, ts: int) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret_keys,
        salt=salt,
        signer=fixed_signer(ts),
        signer_kwargs={"digest_method": DIGESTS[digest]},
    )


def b64decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_vector(secret_keys: list[str], salt: str, digest: str, payload, ts: int) -> dict:
    s = serializer(secret_keys, salt, digest, ts)
    # The exact JSON bytes itsdangerous signs (compact separators), before compression/base64.
    payload_json = Serializer.dump_payload(s, payload).decode("ascii")
    token = s.dumps(payload)
    compressed = token.startswith(".")

    # Self-checks, so a vector is never recorded from a misunderstanding of the format.
    body, ts_part, _sig = token.rsplit(".", 2)
    raw = b64decode(body[1:] if compressed else body)
    assert (zlib.decompress(raw) if compressed else raw) == payload_json.encode("ascii")
    assert int.from_bytes(b64decode(ts_part), "big") == ts
    assert s.loads(token) == payload
    # itsdangerous with a key list signs with the LAST key.
    return {
        "secret": secret_keys[-1],
        "secrets_python_order": secret_keys,
        "salt": salt,
        "digest": digest,
        "payload_json": payload_json,
        "timestamp": ts,
        "token": token,
        "compressed": compressed,
    }


def main() -> None:
    vectors = []
    i = 0
    for digest in DIGESTS:
        for salt in SALTS:
            for secret in SECRETS:
                for p_index, payload in enumerate(PAYLOADS):
                    ts = TIMESTAMPS[i % len(TIMESTAMPS)]
                    i += 1
                    v = make_vector([secret], salt, digest, payload, ts)
                    if p_index == COMPRESSIBLE_INDEX:
                        assert v["token"].startswith("."), "long payload must be compressed"
                    else:
                        assert not v["compressed"], "short payloads must not be compressed"
                    vectors.append(v)

    # Key rotation: itsdangerous is given [old, new] and signs with the last (new) one.
    for digest in DIGESTS:
        for salt in SALTS:
            v = make_vector([SECRETS[0], SECRETS[1]], salt, digest, PAYLOADS[0], 1_700_000_123)
            assert v["secret"] == SECRETS[1]
            vectors.append(v)

    doc = {
        "itsdangerous_version": ITSDANGEROUS_VERSION,
        "generated_by": "python3 shared/tests/vectors/gen_vectors.py (pip install itsdangerous==2.2.0)",
        "format": "URLSafeTimedSerializer(secret, salt=salt, signer_kwargs={'digest_method': hashlib.<digest>}), "
        "key_derivation django-concat; 'secret' is the key that signed (Python signs with the last of "
        "'secrets_python_order')",
        "vectors": vectors,
    }
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
