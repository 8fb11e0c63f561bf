"""Password hashes made by the real libraries of the frameworks sites import users from.

Usage: python foreign_hashes.py PASSWORD [--fast]

Prints one JSON object, scheme name -> hash of PASSWORD. Each library's default parameters,
unless --fast: then cheaper parameters of the same format (what a unit test can afford in a
debug build). Runs in the test virtualenv (deploy/local/venv.sh: Werkzeug, Django, bcrypt,
argon2-cffi).
"""
import base64
import hashlib
import json
import os
import sys

import argon2
import bcrypt
from django.conf import settings
from werkzeug.security import generate_password_hash

settings.configure(
    PASSWORD_HASHERS=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    ]
)
from django.contrib.auth import hashers  # noqa: E402  (needs the settings above)


def phc_b64(raw):
    return base64.b64encode(raw).decode().rstrip("=")


def main():
    password = sys.argv[1]
    fast = "--fast" in sys.argv[2:]
    pw = password.encode()
    out = {}
    # Werkzeug: the Flask seed's default (scrypt), and PBKDF2.
    out["werkzeug_scrypt"] = generate_password_hash(password)
    out["werkzeug_pbkdf2_sha256"] = generate_password_hash(
        password, method="pbkdf2:sha256:1000" if fast else "pbkdf2"
    )
    out["werkzeug_pbkdf2_sha512"] = generate_password_hash(
        password, method="pbkdf2:sha512:1000" if fast else "pbkdf2:sha512"
    )
    # Django.
    pbkdf2 = hashers.PBKDF2PasswordHasher()
    if fast:
        pbkdf2.iterations = 1000
    out["django_pbkdf2_sha256"] = pbkdf2.encode(password, pbkdf2.salt())
    sha1 = hashers.PBKDF2SHA1PasswordHasher()
    if fast:
        sha1.iterations = 1000
    out["django_pbkdf2_sha1"] = sha1.encode(password, sha1.salt())
    a2 = hashers.Argon2PasswordHasher()
    if fast:
        a2.memory_cost, a2.time_cost, a2.parallelism = 1024, 1, 1
    out["django_argon2"] = a2.encode(password, a2.salt())
    bs = hashers.BCryptSHA256PasswordHasher()
    if fast:
        bs.rounds = 4
    out["django_bcrypt_sha256"] = bs.encode(password, bs.salt())
    # pyca bcrypt: $2b$ and $2a$; PHP writes the same function as $2y$.
    rounds = 4 if fast else 12
    out["bcrypt_2b"] = bcrypt.hashpw(pw, bcrypt.gensalt(rounds)).decode()
    out["bcrypt_2a"] = bcrypt.hashpw(pw, bcrypt.gensalt(rounds, prefix=b"2a")).decode()
    out["bcrypt_2y"] = "$2y$" + bcrypt.hashpw(pw, bcrypt.gensalt(rounds)).decode()[4:]
    # argon2-cffi: argon2id (its default) and argon2i.
    if fast:
        ph = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        phi = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=argon2.Type.I)
    else:
        ph, phi = argon2.PasswordHasher(), argon2.PasswordHasher(type=argon2.Type.I)
    out["argon2id"] = ph.hash(password)
    out["argon2i"] = phi.hash(password)
    # PHC strings of scrypt and PBKDF2 (Python's hashlib computes, the PHC layout wraps).
    salt = os.urandom(16)
    ln, r, p = (10, 8, 1) if fast else (15, 8, 1)
    digest = hashlib.scrypt(pw, salt=salt, n=1 << ln, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    out["phc_scrypt"] = f"$scrypt$ln={ln},r={r},p={p}${phc_b64(salt)}${phc_b64(digest)}"
    i = 1000 if fast else 600000
    digest = hashlib.pbkdf2_hmac("sha256", pw, salt, i, 32)
    out["phc_pbkdf2_sha256"] = f"$pbkdf2-sha256$i={i},l=32${phc_b64(salt)}${phc_b64(digest)}"
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
