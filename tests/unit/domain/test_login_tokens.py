"""Login tokens name the one registry they are for, and the Authorizer holds a bound caller to it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from dockyard.config import Settings
from dockyard.domain.clock import utc_now
from dockyard.domain.errors import Denied
from dockyard.domain.iam import LoginTokens, Principal, bootstrap_root_credentials
from dockyard.domain.names import PUBLIC_REGION, RegistryId, RepositoryRef
from dockyard.domain.tokens import TokenSigner
from dockyard.server import Services, prepare
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY

ROOT = Principal(ACCOUNT_ID, None, ACCESS_KEY_ID)
EU = RegistryId(ACCOUNT_ID, "eu-west-1")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    services = prepare(Settings(tmp_path / "data", ACCOUNT_ID, background_jobs=False))
    bootstrap_root_credentials(
        services.metadata, services.box, ACCOUNT_ID, utc_now(), (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    )
    yield services
    services.engine.dispose()


@pytest.mark.parametrize(
    "registry", [EU, RegistryId(ACCOUNT_ID, PUBLIC_REGION), RegistryId("210987654321", "us-east-1")]
)
def test_a_token_verifies_to_the_registry_it_was_issued_for(services: Services, registry: RegistryId) -> None:
    tokens = LoginTokens(TokenSigner(secrets.token_bytes(32)), services.metadata)
    now = utc_now()
    token = tokens.issue(ROOT, registry, now)
    assert token.registry == registry
    assert tokens.verify(token.password, now + timedelta(hours=1)) == (ROOT, registry)


def test_a_token_without_a_region_is_for_the_public_registry(services: Services) -> None:
    """ECR Public tokens were once issued with `"g": null`: they never point at a private registry."""
    signer = TokenSigner(secrets.token_bytes(32))
    now = utc_now()
    password = signer.issue({"k": ACCESS_KEY_ID, "r": ACCOUNT_ID, "g": None}, now + timedelta(hours=12))
    assert LoginTokens(signer, services.metadata).verify(password, now)[1] == RegistryId(ACCOUNT_ID, PUBLIC_REGION)


def test_a_bound_caller_is_held_to_its_registry(services: Services) -> None:
    authorizer = services.authorizer
    in_eu, in_us = RepositoryRef(ACCOUNT_ID, "eu-west-1", "app"), RepositoryRef(ACCOUNT_ID, "us-east-1", "app")
    public = RepositoryRef(ACCOUNT_ID, PUBLIC_REGION, "app")
    authorizer.authorize(ROOT, "ecr:PutImage", in_eu, None, bound_to=EU)
    assert authorizer.allowed(ROOT, "ecr:PutImage", in_eu, None, bound_to=EU)
    for ref in (in_us, public):
        assert not authorizer.allowed(ROOT, "ecr:PutImage", ref, None, bound_to=EU)
        with pytest.raises(Denied):
            authorizer.authorize(ROOT, "ecr:PutImage", ref, None, bound_to=EU)
    assert authorizer.allowed(ROOT, "ecr:BatchGetImage", public, None, bound_to=EU)  # anyone reads public ones
    authorizer.authorize(ROOT, "ecr:BatchGetImage", public, None, bound_to=EU)
    with pytest.raises(Denied):
        authorizer.authorize_registry(ROOT, "ecr:DescribeRepositories", in_us.registry, None, bound_to=EU)
    authorizer.authorize_registry(ROOT, "ecr:DescribeRepositories", EU, None, bound_to=EU)
