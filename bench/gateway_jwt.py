"""Cost of JWT verification per request, HS256 vs RS256 vs ES256, with and without
the gateway's verified-token cache.

Drives `services.gateway.auth.Authenticator` directly (no network), so the figure
is the verification cost alone. Baseline: HS256 without the cache.

    .venv/bin/python bench/gateway_jwt.py [--iterations 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.gateway.auth import AuthConfig, Authenticator, JwksKeys, file_fetcher

SECRET = "bench-secret-0123456789abcdef-0123456789"


def claims() -> dict:
    now = int(time.time())
    return {
        "iss": "lattice",
        "aud": "lattice",
        "sub": "bench",
        "tenant": "acme",
        "scope": "inference:invoke",
        "iat": now,
        "exp": now + 3600,
    }


async def per_call_us(authenticator: Authenticator, token: str, iterations: int) -> float:
    await authenticator.verify(token)  # warm: JWKS fetched, key objects built
    started = time.perf_counter()
    for _ in range(iterations):
        await authenticator.verify(token)
    return (time.perf_counter() - started) / iterations * 1e6


async def main(iterations: int) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = []
    for kid, key, algorithm in (
        ("r1", rsa_key, jwt.algorithms.RSAAlgorithm),
        ("e1", ec_key, jwt.algorithms.ECAlgorithm),
    ):
        entry = json.loads(algorithm.to_jwk(key.public_key()))
        entry.update(kid=kid, use="sig")
        jwks.append(entry)
    path = Path(tempfile.mkdtemp()) / "jwks.json"
    path.write_text(json.dumps({"keys": jwks}))
    tokens = {
        "HS256": jwt.encode(claims(), SECRET, algorithm="HS256"),
        "RS256": jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r1"}),
        "ES256": jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "e1"}),
    }
    results: dict[tuple[str, bool], float] = {}
    for cached in (False, True):
        keys = JwksKeys(file_fetcher(path), lifetime=3600, refetch_interval=60)
        authenticator = Authenticator(
            AuthConfig(hmac_secret=SECRET, cache_size=10_000 if cached else 0), keys
        )
        for algorithm, token in tokens.items():
            results[(algorithm, cached)] = await per_call_us(authenticator, token, iterations)
    baseline = results[("HS256", False)]
    print(f"JWT verification per request ({iterations} iterations each; one core)")
    print(f"{'algorithm':<10}{'cache':<7}{'us/request':>12}{'vs HS256 uncached':>20}")
    for (algorithm, cached), micros in results.items():
        print(
            f"{algorithm:<10}{'on' if cached else 'off':<7}{micros:>12.2f}"
            f"{micros / baseline:>19.3f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    asyncio.run(main(parser.parse_args().iterations))
