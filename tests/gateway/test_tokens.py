"""lattice.tokens: dev tokens the gateway accepts, minted without any server package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lattice.tokens import ALL_SCOPES, mint_dev_token
from services.gateway.auth import AuthConfig, Authenticator, AuthFailure
from services.gateway.authz import METHOD_SCOPES

SECRET = "tokens-test-secret-0123456789abcdef-01"


async def test_minted_token_is_accepted_with_its_claims():
    token = mint_dev_token(
        SECRET, tenant="acme", scopes=["registry:read", "trainer:read"], subject="dev", lifetime=60
    )
    principal = await Authenticator(AuthConfig(hmac_secret=SECRET)).verify(token)
    assert (principal.tenant, principal.subject) == ("acme", "dev")
    assert principal.scopes == {"registry:read", "trainer:read"}
    with pytest.raises(AuthFailure):  # another gateway's secret
        await Authenticator(AuthConfig(hmac_secret=SECRET + "x")).verify(token)
    with pytest.raises(AuthFailure):  # another audience
        await Authenticator(AuthConfig(hmac_secret=SECRET, audience="other")).verify(token)


def test_all_scopes_covers_every_scope_the_gateway_checks():
    assert set(METHOD_SCOPES.values()) <= set(ALL_SCOPES)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tenant": ""}, "tenant"), ({"tenant": "a", "lifetime": 0}, "lifetime")],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mint_dev_token(SECRET, **kwargs)
    with pytest.raises(ValueError, match="secret"):
        mint_dev_token("", tenant="a")


def test_importing_it_needs_no_server_packages():
    code = (
        "import sys, lattice.tokens; "
        "bad = [m for m in ('services', 'torch', 'redis', 'opentelemetry') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
