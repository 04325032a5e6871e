"""The IAM and STS doors: the AWS Query protocol (form-encoded `Action=…`, XML answers) on `POST /`.

Only the subset Dockyard's accounts need: users, access keys, inline user policies, GetCallerIdentity. The
XML is rendered through botocore's output shapes so boto3 parses it as it parses AWS's own answers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, Final
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from botocore.model import OperationModel, Shape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dockyard.domain.accounts import Accounts, InvalidInput
from dockyard.domain.errors import DockyardError, ErrorKind, Unavailable
from dockyard.domain.iam import Authenticator, Authorizer, Principal
from dockyard.domain.names import parse_decimal
from dockyard.domain.ports import AccessKeyInfo, IamUser
from dockyard.http import aws_json
from dockyard.http.auth import request_context
from dockyard.http.bodies import body_chunks
from dockyard.http.errors import log
from dockyard.http.logs import note_principal
from dockyard.http.metrics import LATENCY, REQUESTS
from dockyard.http.sigv4 import GLOBAL_SIGNING_REGION, SignedRequest, verify

MAX_BODY: Final = 1024 * 1024
FORM: Final = "application/x-www-form-urlencoded"


# The Query protocol's names for errors the JSON protocol names otherwise.
_QUERY_CODES: Final = {
    "UnrecognizedClientException": "InvalidClientTokenId",
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "AccessDeniedException": "AccessDenied",
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
    "ExpiredTokenException": "ExpiredToken",
    "ServerException": "ServiceFailure",
    "SerializationException": "MalformedQueryString",
}


class InvalidAction(DockyardError):
    kind = ErrorKind("UNSUPPORTED", 400, "InvalidAction", "The action is not valid for this endpoint")


Handler = Callable[[Principal, dict[str, str]], dict[str, Any] | None]


class QueryDoor:
    """Dispatches IAM and STS actions by the SigV4 credential scope's service name."""

    def __init__(self, accounts: Accounts, authenticator: Authenticator, authorizer: Authorizer) -> None:
        self.accounts = accounts
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.clock = accounts.clock
        self.handlers: dict[str, dict[str, Handler]] = {
            "iam": {
                "CreateUser": self.create_user,
                "GetUser": self.get_user,
                "ListUsers": self.list_users,
                "DeleteUser": self.delete_user,
                "CreateAccessKey": self.create_access_key,
                "ListAccessKeys": self.list_access_keys,
                "DeleteAccessKey": self.delete_access_key,
                "PutUserPolicy": self.put_user_policy,
                "GetUserPolicy": self.get_user_policy,
                "DeleteUserPolicy": self.delete_user_policy,
                "ListUserPolicies": self.list_user_policies,
            },
            "sts": {"GetCallerIdentity": self.get_caller_identity},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        started = time.perf_counter()
        service, action = "iam", "unknown"
        try:
            body = await _read_body(request)
            params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            action = params.get("Action", "")
            signed = SignedRequest(request.method, request.url.path, request.url.query, request.headers.items(), body)
            verified = await run_in_threadpool(
                partial(verify, regions=self.authenticator.regions | GLOBAL_SIGNING_REGION),
                signed,
                self.authenticator.secret_of,
                frozenset(self.handlers),
                self.clock(),
            )
            service = verified.service
            note_principal(verified.principal)
            response = await run_in_threadpool(self.run, service, action, verified.principal, params, request)
        except DockyardError as error:
            response = _error_response(error, service)
        except Exception as exc:
            log.exception("unexpected error in %s %s", service, action, exc_info=exc)
            response = _error_response(Unavailable("internal error"), service)
        LATENCY.labels(service, action).observe(time.perf_counter() - started)
        REQUESTS.labels(service, action, request.method, str(response.status_code)).inc()
        await response(scope, receive, send)

    def run(
        self, service: str, action: str, principal: Principal, params: dict[str, str], request: Request
    ) -> Response:
        handler = self.handlers[service].get(action)
        model = aws_json.service_model(service)
        if handler is None or action not in model.operation_names:
            raise InvalidAction(f"Could not find operation {action} for version {params.get('Version', '')}")
        operation = model.operation_model(action)
        _check_input(operation, params)
        if service == "iam":
            context = request_context(request)
            self.authorizer.authorize_account(principal, f"iam:{action}", principal.account_id, context)
        result = handler(principal, params)
        return _xml_response(operation, result, model.metadata["xmlNamespace"])

    # ------------------------------------------------------------------------------------------ handlers

    def _user_name(self, principal: Principal, params: dict[str, str]) -> str:
        name = params.get("UserName") or principal.user_name
        if name is None:
            raise InvalidInput("UserName is required when the caller is the account's root user")
        return name

    def create_user(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        user = self.accounts.create_user(principal.account_id, params["UserName"], params.get("Path", "/"))
        return {"User": _user_shape(user)}

    def get_user(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        return {"User": _user_shape(self.accounts.user(principal.account_id, self._user_name(principal, params)))}

    def list_users(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        users = [
            u
            for u in self.accounts.list_users(principal.account_id)
            if u.path.startswith(params.get("PathPrefix", "/"))
        ]
        return _paged("Users", [_user_shape(u) for u in users], params, key=lambda u: str(u["UserName"]))

    def delete_user(self, principal: Principal, params: dict[str, str]) -> None:
        self.accounts.delete_user(principal.account_id, params["UserName"])

    def create_access_key(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        user_name = params.get("UserName") or principal.user_name
        key = self.accounts.create_access_key(principal.account_id, user_name)
        shape = _key_shape(key.info)
        return {
            "AccessKey": {
                **shape,
                "UserName": shape.get("UserName") or "root",
                "SecretAccessKey": key.secret_access_key,
            }
        }

    def list_access_keys(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        keys = self.accounts.list_access_keys(principal.account_id, params.get("UserName") or principal.user_name)
        return _paged("AccessKeyMetadata", [_key_shape(k) for k in keys], params, key=lambda k: str(k["AccessKeyId"]))

    def delete_access_key(self, principal: Principal, params: dict[str, str]) -> None:
        user_name = params.get("UserName") or principal.user_name
        self.accounts.delete_access_key(principal.account_id, user_name, params["AccessKeyId"])

    def put_user_policy(self, principal: Principal, params: dict[str, str]) -> None:
        self.accounts.put_user_policy(
            principal.account_id, params["UserName"], params["PolicyName"], params["PolicyDocument"]
        )

    def get_user_policy(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        document = self.accounts.user_policy(principal.account_id, params["UserName"], params["PolicyName"])
        encoded = quote(document, safe="")  # IAM returns documents URL-encoded (RFC 3986); SDKs decode them
        return {"UserName": params["UserName"], "PolicyName": params["PolicyName"], "PolicyDocument": encoded}

    def delete_user_policy(self, principal: Principal, params: dict[str, str]) -> None:
        self.accounts.delete_user_policy(principal.account_id, params["UserName"], params["PolicyName"])

    def list_user_policies(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        names = self.accounts.list_user_policies(principal.account_id, params["UserName"])
        return _paged("PolicyNames", names, params, key=str)

    def get_caller_identity(self, principal: Principal, params: dict[str, str]) -> dict[str, Any]:
        user_id = principal.account_id
        if principal.user_name is not None:
            user_id = self.accounts.user(principal.account_id, principal.user_name).user_id
        return {"UserId": user_id, "Account": principal.account_id, "Arn": principal.arn}


# ---------------------------------------------------------------------------------------------- protocol


async def _read_body(request: Request) -> bytes:
    parts, total = [], 0
    async for chunk in body_chunks(request):
        total += len(chunk)
        if total > MAX_BODY:
            raise InvalidInput(f"the request body exceeds {MAX_BODY} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _check_input(operation: OperationModel, params: dict[str, str]) -> None:
    """Scalar members only (the subset served has no others): required, lengths, patterns, integers."""
    shape = operation.input_shape
    if shape is None:
        return
    typed: dict[str, Any] = {}
    for name, member in shape.members.items():
        if name not in params:
            continue
        if member.type_name not in ("string", "integer"):
            raise InvalidInput(f"{name} is not supported by Dockyard")
        typed[name] = _integer(name, params[name]) if member.type_name == "integer" else params[name]
    try:
        aws_json.validate(shape, typed)
    except DockyardError as error:
        raise InvalidInput(error.message) from None


def _integer(name: str, text: str) -> int:
    number = parse_decimal(text)
    if number is None:
        raise InvalidInput(f"{name} must be a non-negative integer of at most 19 digits")
    return number


def _paged(member: str, items: list[Any], params: dict[str, str], key: Callable[[Any], str]) -> dict[str, Any]:
    marker = params.get("Marker")
    limit = int(params.get("MaxItems", "100"))
    remaining = [item for item in items if marker is None or key(item) > marker]
    page = remaining[:limit]
    truncated = len(remaining) > limit
    return {member: page, "IsTruncated": truncated, "Marker": key(page[-1]) if truncated else None}


def _user_shape(user: IamUser) -> dict[str, Any]:
    return {
        "Path": user.path,
        "UserName": user.user_name,
        "UserId": user.user_id,
        "Arn": user.arn,
        "CreateDate": user.created_at,
    }


def _key_shape(key: AccessKeyInfo) -> dict[str, Any]:
    return {
        "UserName": key.user_name,
        "AccessKeyId": key.access_key_id,
        "Status": "Active",
        "CreateDate": key.created_at,
    }


def _xml(shape: Shape, value: Any) -> str:
    kind = shape.type_name
    if kind == "structure":
        unknown = set(value) - set(shape.members)  # type: ignore[attr-defined]
        if unknown:
            raise ValueError(f"{shape.name} has no members {sorted(unknown)}")
        return "".join(
            f"<{name}>{_xml(shape.members[name], item)}</{name}>"  # type: ignore[attr-defined]
            for name, item in value.items()
            if item is not None
        )
    if kind == "list":
        return "".join(f"<member>{_xml(shape.member, item)}</member>" for item in value)  # type: ignore[attr-defined]
    if kind == "timestamp":
        return escape(value.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else str(value))
    if kind == "boolean":
        return "true" if value else "false"
    return escape(str(value))


def _xml_response(operation: OperationModel, result: dict[str, Any] | None, namespace: str) -> Response:
    name = operation.name
    inner = ""
    if operation.output_shape is not None and result is not None:
        inner = f"<{name}Result>{_xml(operation.output_shape, result)}</{name}Result>"
    request_id = str(uuid.uuid4())
    body = (
        f'<{name}Response xmlns="{namespace}">{inner}'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>"
    )
    return Response(body.encode(), media_type="text/xml", headers={"x-amzn-RequestId": request_id})


def query_error_response(error: DockyardError) -> Response:
    """An error answered before the request is read (so before its service is known): IAM's shape."""
    response = _error_response(error, "iam")
    response.headers.update(error.headers)
    return response


def _error_response(error: DockyardError, service: str) -> Response:
    namespace = aws_json.service_model(service).metadata["xmlNamespace"]
    code = _QUERY_CODES.get(error.ecr_exception, error.ecr_exception.removesuffix("Exception"))
    request_id = str(uuid.uuid4())
    fault = "Receiver" if error.http_status >= 500 else "Sender"
    body = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{fault}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(error.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    status = error.http_status if error.http_status in (400, 403, 404, 409, 500, 501, 503) else 400
    return Response(body.encode(), status_code=status, media_type="text/xml", headers={"x-amzn-RequestId": request_id})
