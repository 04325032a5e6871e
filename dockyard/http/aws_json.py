"""The AWS JSON 1.1 protocol, driven by botocore's service models.

Requests are validated against the operation's input shape (required members, types, lengths, ranges,
patterns, enums) and answered through its output shape, so member names and types are the model's. botocore
itself only validates on the client side and only some constraints; the server-side walk is written here.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
from datetime import datetime
from functools import cache
from typing import Any, Final

from botocore.loaders import create_loader
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape
from starlette.responses import Response

from dockyard.domain.errors import DockyardError, ErrorKind, InsufficientStorage, InvalidParameter

CONTENT_TYPE: Final = "application/x-amz-json-1.1"


class SerializationError(DockyardError):
    kind = ErrorKind("UNSUPPORTED", 400, "SerializationException", "the request body is not valid JSON")


class UnknownOperation(DockyardError):
    kind = ErrorKind("UNSUPPORTED", 400, "UnknownOperationException", "unknown operation")


class NotBuilt(DockyardError):
    """An operation of the model that this Dockyard does not implement yet: a clear refusal, never a fake success."""

    kind = ErrorKind("UNSUPPORTED", 400, "ValidationException", "this operation is not supported by Dockyard yet")


@cache
def service_model(name: str) -> ServiceModel:
    """The service's model as a botocore session would build it (same loader and search path), without
    importing the session: that brings botocore's client, waiter and docs machinery, which serving never uses
    (a worker starts about 0.1 s sooner and a few MB lighter)."""
    loader = create_loader(os.environ.get("AWS_DATA_PATH"))
    return ServiceModel(loader.load_service_model(name, "service-2"), service_name=name)


def operation(service: ServiceModel, name: str) -> OperationModel:
    if name not in service.operation_names:
        raise UnknownOperation(f"Unknown operation {name!r} for {service.service_name}")
    return service.operation_model(name)


def parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SerializationError("Start of structure or map found where not expected, or invalid JSON") from None
    if not isinstance(document, dict):
        raise SerializationError("the request body must be a JSON object")
    try:  # an escaped lone surrogate (`"\\ud800"`) parses, but no store or UTF-8 encoder takes it
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise SerializationError("the request body contains an unpaired UTF-16 surrogate") from None
    return document


# ------------------------------------------------------------------------------------------- validation


def validate(shape: Shape | None, value: Any) -> dict[str, Any]:
    """Check `value` against the input shape and return it with blobs decoded and timestamps parsed."""
    if shape is None:
        return {}
    result: dict[str, Any] = _validate(shape, value, "")
    return result


def _invalid(path: str, reason: str) -> InvalidParameter:
    where = path.lstrip(".") or "request"
    return InvalidParameter(f"Invalid parameter at '{where}' failed to satisfy constraint: '{reason}'")


def _validate(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _validate_structure(shape, value, path)  # type: ignore[arg-type]
    if kind == "list":
        if not isinstance(value, list):
            raise _invalid(path, "must be a list")
        _check_length(shape, len(value), path, "member count")
        return [_validate(shape.member, item, f"{path}.member") for item in value]  # type: ignore[attr-defined]
    if kind == "map":
        if not isinstance(value, dict):
            raise _invalid(path, "must be a map")
        return {
            _validate(shape.key, k, f"{path}.key"): _validate(shape.value, v, f"{path}.{k}")  # type: ignore[attr-defined]
            for k, v in value.items()
        }
    return _validate_scalar(shape, value, path)


def _validate_structure(shape: StructureShape, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(path, "must be an object")
    for name in shape.required_members:
        if value.get(name) is None:
            raise _invalid(f"{path}.{name}", "Member must not be null")
    result = {}
    for name, member in shape.members.items():
        if value.get(name) is not None:
            result[name] = _validate(member, value[name], f"{path}.{name}")
    return result  # unknown members are ignored, as AWS services do


def _validate_scalar(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type_name
    if kind == "string":
        if not isinstance(value, str):
            raise _invalid(path, "must be a string")
        _check_length(shape, len(value), path, "length")
        _check_enum_and_pattern(shape, value, path)
        return value
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _invalid(path, "must be an integer")
        _check_range(shape, value, path)
        return value
    if kind in ("float", "double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _invalid(path, "must be a number")
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(path, "must be a boolean")
        return value
    if kind == "timestamp":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _invalid(path, "must be a timestamp in epoch seconds")
        try:
            return datetime.fromtimestamp(value).astimezone()
        except (OverflowError, OSError, ValueError):  # beyond year 9999, or NaN
            raise _invalid(path, "must be a timestamp in epoch seconds within years 1-9999") from None
    if kind == "blob":
        return _decode_blob(shape, value, path)
    raise _invalid(path, f"unsupported type {kind}")


def _decode_blob(shape: Shape, value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise _invalid(path, "must be base64-encoded")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(path, "must be base64-encoded") from None
    _check_length(shape, len(data), path, "length")
    return data


def _check_length(shape: Shape, length: int, path: str, what: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and length < low:
        raise _invalid(path, f"Member must have {what} greater than or equal to {low}")
    if high is not None and length > high:
        raise _invalid(path, f"Member must have {what} less than or equal to {high}")


def _check_range(shape: Shape, value: int, path: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        raise _invalid(path, f"Member must have value greater than or equal to {low}")
    if high is not None and value > high:
        raise _invalid(path, f"Member must have value less than or equal to {high}")


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _check_enum_and_pattern(shape: Shape, value: str, path: str) -> None:
    enum = shape.metadata.get("enum")
    if enum and value not in enum:
        raise _invalid(path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
    pattern = shape.metadata.get("pattern")
    if pattern and _pattern(pattern).fullmatch(value) is None:
        raise _invalid(path, f"Member must satisfy regular expression pattern: {pattern}")


# ------------------------------------------------------------------------------------------- output


def serialize(shape: Shape | None, value: Any) -> Any:
    """Render a handler's result through the output shape; an unknown member is a bug, not a silent drop."""
    if shape is None:
        return {}
    kind = shape.type_name
    if kind == "structure":
        unknown = set(value) - set(shape.members)  # type: ignore[attr-defined]
        if unknown:
            raise ValueError(f"{shape.name} has no members {sorted(unknown)}")
        return {
            name: serialize(shape.members[name], item)  # type: ignore[attr-defined]
            for name, item in value.items()
            if item is not None
        }
    if kind == "list":
        return [serialize(shape.member, item) for item in value]  # type: ignore[attr-defined]
    if kind == "map":
        return {key: serialize(shape.value, item) for key, item in value.items()}  # type: ignore[attr-defined]
    if kind == "timestamp":
        return value.timestamp() if isinstance(value, datetime) else value
    if kind == "blob":
        return base64.b64encode(value).decode()
    return value


def json_response(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body).encode(),
        status_code=status,
        media_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


def error_response(error: DockyardError) -> Response:
    body: dict[str, Any] = {"__type": error.ecr_exception, "message": error.message}
    if isinstance(error.detail, dict):
        body.update({key: value for key, value in error.detail.items() if key not in body})
    status = 500 if error.ecr_exception == "ServerException" else 400
    if isinstance(error, InsufficientStorage):
        status = error.http_status  # 507: a full disk, not a bug; the same status as on the registry door
    if error.http_status == 501:  # a transfer coding the server does not implement (RFC 9112 §6.1)
        status = 501
    # AWS answers a refused or unsigned call 403 (MissingAuthenticationTokenException: no Authorization at all).
    if error.http_status in (401, 403) and error.ecr_exception in (
        "AccessDeniedException",
        "MissingAuthenticationTokenException",
    ):
        status = error.http_status
    if error.ecr_exception == "ServiceUnavailableException":  # AWS SDKs retry a 503 (after its Retry-After)
        status = error.http_status
    response = json_response(body, status)
    response.headers.update(error.headers)
    return response
