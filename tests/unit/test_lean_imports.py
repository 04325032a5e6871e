"""What each process imports before it does its work: the CLI, the supervisor and the worker load only what
they use (speed itself is measured by benchmarks/startup.py, never timed here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_STACK = ("boto3", "botocore", "sqlalchemy", "starlette", "alembic", "granian")


def loaded_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The top-level packages among `prefixes` that a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return [name for name in loaded if name in prefixes]


def test_the_cli_imports_no_server_stack() -> None:
    assert loaded_after("import dockyard.cli", SERVER_STACK) == []


@pytest.mark.parametrize("module", ["dockyard.admin_cli", "dockyard.ops_cli", "dockyard.usage_cli"])
def test_the_command_groups_import_no_server_stack(module: str) -> None:
    assert loaded_after(f"import {module}", SERVER_STACK) == []


def test_the_supervisor_imports_granian_but_not_the_application() -> None:
    assert loaded_after("import dockyard.launcher", SERVER_STACK) == ["granian"]


def test_the_stores_load_no_http_stack_and_no_aws_sdk_without_s3_or_kms() -> None:
    assert loaded_after("import dockyard.services", SERVER_STACK) == ["sqlalchemy"]


def test_the_worker_loads_no_boto3_and_no_botocore_client() -> None:
    code = "import dockyard.server\nimport sys\nassert 'botocore.client' not in sys.modules, 'botocore.client'"
    assert "boto3" not in loaded_after(code, SERVER_STACK)


def test_the_regions_read_without_botocore_are_its_loaders() -> None:
    from botocore.loaders import create_loader

    from dockyard.config import aws_regions

    partitions = create_loader().load_data("endpoints")["partitions"]
    assert aws_regions() == tuple(sorted(next(p for p in partitions if p["partition"] == "aws")["regions"]))
    assert loaded_after("from dockyard.config import aws_regions\naws_regions()", SERVER_STACK) == []


def test_serve_prepares_the_stores_without_the_http_stack_or_the_aws_sdk() -> None:
    code = "import dockyard.cli\nimport dockyard.domain.iam\nfrom dockyard.storage.startup import prepare_metadata"
    assert loaded_after(code, SERVER_STACK) == ["sqlalchemy"]
