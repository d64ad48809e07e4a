"""Gateway settings from the environment `lattice up` sets, and safe defaults."""

from __future__ import annotations

from services.gateway.server import GatewaySettings
from services.runtime.settings import load_settings


def test_lattice_up_environment_configures_the_gateway():
    settings = load_settings(
        GatewaySettings,
        "gateway",
        argv=["--quota-requests", "100"],
        env={
            "LATTICE_DEV_JWT_SECRET": "dev-secret",
            "LATTICE_REDIS_URL": "redis://127.0.0.1:6390/0",
            "LATTICE_INFERENCE_ADDRESSES": "127.0.0.1:7001, 127.0.0.1:7002",
            "LATTICE_GATEWAY_JWT_ALGORITHMS": "RS256,ES256",
            "LATTICE_GATEWAY_QUOTA_FAIL_OPEN": "false",
        },
    )
    assert settings.dev_jwt_secret == "dev-secret"
    assert settings.redis_url == "redis://127.0.0.1:6390/0"
    assert settings.inference_addresses == ("127.0.0.1:7001", "127.0.0.1:7002")
    assert settings.jwt_algorithms == ("RS256", "ES256")
    assert settings.quota_fail_open is False
    assert settings.quota_requests == 100


def test_defaults_are_closed_not_open():
    settings = GatewaySettings()
    assert settings.dev_jwt_secret == ""  # no HMAC tokens unless a secret is configured
    assert (settings.jwt_issuer, settings.jwt_audience) == ("lattice", "lattice")
    assert "none" not in {a.lower() for a in settings.jwt_algorithms}
    assert settings.quota_requests == 0 and settings.quota_tokens == 0  # unlimited by default
    assert settings.host == "127.0.0.1"  # plaintext only on loopback by default
