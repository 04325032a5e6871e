"""The OCI Distribution door (`/v2/…`): parse, authenticate, authorise, call the domain, serialise.

Each route names the ECR action it is authorised against (see docs/authorization.md for the table).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from dockyard.domain.errors import (
    BlobUploadInvalid,
    Denied,
    DigestInvalid,
    DockyardError,
    ManifestInvalid,
    ManifestTooLarge,
    NameUnknown,
    RangeInvalid,
    RangeNotSatisfiable,
    Unauthorized,
)
from dockyard.domain.iam import Authenticator, Authorizer, LoginTokens, Principal
from dockyard.domain.images import BlobAppender, Registry, page_size
from dockyard.domain.manifests import MAX_MANIFEST_BYTES
from dockyard.domain.names import (
    MAX_INT64,
    PUBLIC_PATH_PREFIX,
    PUBLIC_REGION,
    Digest,
    RegistryId,
    RepositoryRef,
    check_repository_name,
    parse_decimal,
    registry_from_host,
)
from dockyard.domain.ports import BlobStore
from dockyard.domain.registry_tokens import BearerGrant, RegistryTokens, parse_scopes
from dockyard.domain.usage import UsageMeter
from dockyard.http.auth import INSUFFICIENT_SCOPE, Caller, password_caller, registry_caller, request_context
from dockyard.http.bodies import BodyIncomplete, body_chunks, check_transfer_coding
from dockyard.http.errors import oci_error_response, unexpected_error_response
from dockyard.http.logs import note_principal
from dockyard.http.metrics import BYTES_RECEIVED, BYTES_SENT, LATENCY, REQUESTS

API_VERSION_HEADER: Final = {"Docker-Distribution-API-Version": "registry/2.0"}
# Bytes handed to a worker thread at a time: large enough that thread hand-offs cost nothing,
# small enough that memory stays flat whatever the blob size.
WRITE_BATCH: Final = 4 * 1024 * 1024
_CONTENT_RANGE_RE: Final = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/[0-9*]+)?")
_RANGE_RE: Final = re.compile(r"bytes=([0-9]*)-([0-9]*)")
MAX_TOKEN_FORM: Final = 64 * 1024
# What an error answer reads of a body left unread (a push refused before its bytes were taken, e.g. on a full
# disk): clients that send their whole body before reading the answer would otherwise see the connection
# reset instead of the error. Beyond this much the connection is closed anyway.
DRAIN_LIMIT: Final = 64 * 1024 * 1024

Handler = Callable[["Call"], Awaitable[Response]]


# Metric children by label values: `labels()` validates and looks them up under a lock on every call.
@functools.cache
def _latency(route: str) -> Any:
    return LATENCY.labels("registry", route)


@functools.lru_cache(maxsize=4096)  # bounded: methods are client-chosen strings
def _requests(route: str, method: str, status: int) -> Any:
    return REQUESTS.labels("registry", route, method, str(status))


@dataclass(frozen=True)
class Call:
    """One parsed registry request."""

    request: Request
    principal: Principal | None
    ref: RepositoryRef
    params: dict[str, str]
    caller: Caller
    path_name: str  # the repository as the path names it (`public/<alias>/…` for public ones)

    @property
    def grant(self) -> BearerGrant | None:
        return self.caller.grant


@dataclass
class Trace:
    """What the error path and metrics need to know about a request once it has been routed."""

    route: str = "unmatched"
    scope: str | None = None  # the token scope the request needs, for a Bearer challenge


# The token-flow action each ECR action belongs to.
_SCOPE_OF: Final = {
    "ecr:BatchGetImage": "pull",
    "ecr:GetDownloadUrlForLayer": "pull",
    "ecr:BatchCheckLayerAvailability": "pull",
    "ecr:ListImages": "pull",
    "ecr:InitiateLayerUpload": "push",
    "ecr:UploadLayerPart": "push",
    "ecr:CompleteLayerUpload": "push",
    "ecr:PutImage": "push",
    "ecr:BatchDeleteImage": "delete",
}


class RegistryDoor:
    """The ASGI app mounted at `/v2`."""

    def __init__(
        self,
        registry: Registry,
        authenticator: Authenticator,
        login_tokens: LoginTokens,
        authorizer: Authorizer,
        default_account: str,
        default_region: str,
        realm: str,
        bearer: RegistryTokens | None = None,
        public_accounts: Callable[[str], str | None] = lambda alias: None,
        meter: UsageMeter | None = None,
    ) -> None:
        self.registry = registry
        self.meter = meter  # counts bytes sent, pulls and pushes per repository (usage reports)
        self.authenticator = authenticator
        self.login_tokens = login_tokens
        self.authorizer = authorizer
        self.default_account = default_account
        self.default_region = default_region
        self.realm = realm
        self.bearer = bearer
        self.public_accounts = public_accounts
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?"), {"POST": self.start_upload}),
            (
                re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<upload>[A-Za-z0-9-]+)"),
                {
                    "GET": self.upload_status,
                    "PATCH": self.upload_chunk,
                    "PUT": self.finish_upload,
                    "DELETE": self.cancel_upload,
                },
            ),
            (
                re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
                {"GET": self.get_blob, "HEAD": self.get_blob, "DELETE": self.delete_blob},
            ),
            (
                re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
                {
                    "GET": self.get_manifest,
                    "HEAD": self.get_manifest,
                    "PUT": self.put_manifest,
                    "DELETE": self.delete_manifest,
                },
            ),
            (re.compile(r"/v2/(?P<name>.+)/tags/list"), {"GET": self.list_tags}),
            (re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)"), {"GET": self.referrers}),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        head = request.method == "HEAD"
        started = time.perf_counter()
        trace = Trace()
        try:
            response = await self.dispatch(request, trace)
        except DockyardError as error:
            response = oci_error_response(error, head, self.challenge(trace, error))
            await drain_body(request, DRAIN_LIMIT)
        except Exception as exc:
            response = unexpected_error_response(exc, head)
            await drain_body(request, DRAIN_LIMIT)
        response.headers.update(API_VERSION_HEADER)
        _latency(trace.route).observe(time.perf_counter() - started)
        _requests(trace.route, request.method, response.status_code).inc()
        await response(scope, receive, send)

    def challenge(self, trace: Trace, error: DockyardError) -> str:
        if self.bearer is None:
            return f'Basic realm="{self.realm}",service="dockyard"'
        parts = [f'Bearer realm="{self.realm}/token"', 'service="dockyard"']
        if trace.scope:
            parts.append(f'scope="{trace.scope}"')
        if error.detail == INSUFFICIENT_SCOPE:
            parts.append('error="insufficient_scope"')
        return ",".join(parts)

    async def dispatch(self, request: Request, trace: Trace) -> Response:
        """Route the request; `trace` learns the route (metrics) and the scope it needs (challenges)."""
        path = request.url.path
        check_transfer_coding(request.headers)  # framing first: before the route or the credentials are read
        if path == "/token":
            trace.route = "token"
            return await self.token_endpoint(request)

        def authenticate() -> Caller:  # only once the route is named: a refused request counts under it
            caller = registry_caller(request, self.authenticator, self.login_tokens, self.bearer, self.registry.clock())
            note_principal(caller.principal)
            return caller

        if path in ("/v2", "/v2/"):
            trace.route = "base"
            return self.base(request, authenticate())
        if path == "/v2/_catalog":
            trace.route = "catalog"
            trace.scope = "registry:catalog:*"
            return self.catalog(request, authenticate())
        for pattern, handlers in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            handler = handlers.get(request.method)
            if handler is None:
                authenticate()
                return Response(status_code=405, headers={"Allow": ", ".join(handlers)})
            trace.route = handler.__name__
            caller = authenticate()
            principal = caller.principal
            params = match.groupdict()
            path_name = params.pop("name")
            ref = self.repository_ref(request, caller, path_name)
            trace.scope = f"repository:{path_name}:{'pull' if request.method in ('GET', 'HEAD') else 'pull,push'}"
            return await handler(Call(request, principal, ref, params, caller, path_name))
        authenticate()
        raise NameUnknown(f"no registry route for {path!r}")

    def repository_ref(self, request: Request, caller: Caller, name: str) -> RepositoryRef:
        """`public/<alias>/<name>` is a public repository of the alias's account. Otherwise account and region
        come from the host name when it names them, else from the caller's token or credentials, else the
        server's defaults.

        This decides the registry a request acts on; a login token bound to another one is then refused on it
        (`Authorizer`, given `Caller.bound_to`), before anything about the repository is looked at."""
        check_repository_name(name)
        if name.startswith(PUBLIC_PATH_PREFIX):
            alias, _, repository = name.removeprefix(PUBLIC_PATH_PREFIX).partition("/")
            account = self.public_accounts(alias)
            if account is None or not repository:
                raise NameUnknown(f"no public registry with alias {alias!r}", detail={"name": name})
            return RepositoryRef(account, PUBLIC_REGION, check_repository_name(repository))
        from_host = registry_from_host(request.headers.get("host", ""))
        if from_host is not None:
            return RepositoryRef(from_host[0], self.served(from_host[1]), name)
        if caller.registry is not None:
            # An ECR Public token names its account's public registry, which a name without `public/` is not.
            region = self.default_region if caller.registry.is_public else self.served(caller.registry.region)
            return RepositoryRef(caller.registry.account_id, region, name)
        account = caller.principal.account_id if caller.principal else self.default_account
        return RepositoryRef(account, self.default_region, name)

    def served(self, region: str) -> str:
        """`region`, if the deployment serves it: another would silently open a new, empty registry."""
        if region not in self.authenticator.regions:
            raise NameUnknown(f"region {region!r} is not served by this registry (see --regions)")
        return region

    def authorize(self, call: Call, action: str, ref: RepositoryRef | None = None, path_name: str = "") -> None:
        """Bearer grants are checked by the repository's name as the path spells it, then IAM decides."""
        target = ref or call.ref
        scope_name = path_name or call.path_name
        needed = _SCOPE_OF[action]
        if call.grant is not None and not call.grant.allows("repository", scope_name, needed, target.registry):
            raise Unauthorized(f"the bearer token does not grant {needed} on {scope_name}", INSUFFICIENT_SCOPE)
        context = request_context(call.request)
        self.authorizer.authorize(call.principal, action, target, context, call.caller.bound_to)

    # ------------------------------------------------------------------------------------ base, catalog

    def base(self, request: Request, caller: Caller) -> Response:
        """Credentials are checked, nothing else; a login token is not good for a registry host not its own."""
        if caller.principal is None and caller.grant is None:
            raise Unauthorized("authentication required")
        from_host = registry_from_host(request.headers.get("host", ""))
        if caller.bound_to is not None and from_host is not None and RegistryId(*from_host) != caller.bound_to:
            raise Denied(f"the authorization token is for {caller.bound_to}, not for this registry")
        return _json({})

    async def token_endpoint(self, request: Request) -> Response:
        """Docker's token endpoint (GET with query, or the OAuth2 form POST): scopes intersected with IAM."""
        if self.bearer is None:
            raise NameUnknown("the token endpoint is enabled with --auth-challenge bearer")
        form: dict[str, str] = {}
        if request.method == "POST":  # OAuth2 form (urlencoded): parsed here, python-multipart is no dependency
            form = dict(parse_qsl((await read_limited(request, MAX_TOKEN_FORM)).decode("utf-8", "replace")))
        scope_texts = request.query_params.getlist("scope") + ([form["scope"]] if "scope" in form else [])
        caller = registry_caller(request, self.authenticator, self.login_tokens, None, self.registry.clock())
        if caller.principal is None and form.get("password"):
            caller = password_caller(
                form.get("username", ""), form["password"], self.authenticator, self.login_tokens, self.registry.clock()
            )
        note_principal(caller.principal)
        registry = self.repository_ref(request, caller, "token").registry
        context = request_context(request)

        def resolve(name: str) -> RepositoryRef | None:
            try:
                return self.repository_ref(request, caller, name)
            except DockyardError:
                return None  # an invalid or unknown name is granted nothing

        token, expires_at, _ = await run_in_threadpool(
            self.bearer.issue,
            caller.principal,
            registry,
            resolve,
            parse_scopes(scope_texts),
            lambda principal, action, target: self.authorizer.allowed(
                principal, action, target, context, caller.bound_to
            ),
            lambda principal: (
                principal is not None
                and principal.account_id == registry.account_id
                and caller.bound_to in (None, registry)
            ),
            self.registry.clock(),
        )
        now = self.registry.clock()
        return _json(
            {
                "token": token,
                "access_token": token,
                "expires_in": int((expires_at - now).total_seconds()),
                "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def catalog(self, request: Request, caller: Caller) -> Response:
        ref = self.repository_ref(request, caller, "catalog")
        if caller.grant is not None and not caller.grant.allows("registry", "catalog", "*", ref.registry):
            raise Unauthorized("the bearer token does not grant registry:catalog:*", INSUFFICIENT_SCOPE)
        self.authorizer.authorize_registry(
            caller.principal, "ecr:DescribeRepositories", ref.registry, request_context(request), caller.bound_to
        )
        limit = page_size(request.query_params.get("n"))
        after = request.query_params.get("last") or None
        context = request_context(request)

        def visible(name: str) -> bool:
            target = RepositoryRef(ref.account_id, ref.region, name)
            return self.authorizer.allowed(
                caller.principal, "ecr:DescribeRepositories", target, context, caller.bound_to
            )

        page = self.registry.catalog(ref.account_id, ref.region, after, limit, visible)
        headers = _next_link("/v2/_catalog", limit, page.items) if page.has_more and limit else {}
        return _json({"repositories": page.items}, headers=headers)

    # ------------------------------------------------------------------------------------ blobs

    async def get_blob(self, call: Call) -> Response:
        head = call.request.method == "HEAD"
        self.authorize(call, "ecr:BatchCheckLayerAvailability" if head else "ecr:GetDownloadUrlForLayer")
        digest = Digest.parse(call.params["digest"])
        size = self.registry.blob_size(call.ref, digest)
        headers = {
            "Docker-Content-Digest": str(digest),
            "Accept-Ranges": "bytes",
            "ETag": f'"{digest}"',
            "Cache-Control": "max-age=31536000",
        }
        byte_range = _requested_range(call.request.headers.get("range"), size)
        if head:
            length = size if byte_range is None else byte_range[1] - byte_range[0] + 1
            return _head_response(200 if byte_range is None else 206, length, headers, byte_range, size)
        store = await run_in_threadpool(self.registry.blob_store_for, call.ref)
        if byte_range is None:
            redirect = store.redirect_url(digest)
            if redirect is not None:
                if self.meter is not None:  # the bytes leave the blob store on the registry's account
                    self.meter.sent(call.ref, size)
                return Response(status_code=307, headers={"Location": redirect, **headers, "Content-Length": "0"})
            return BlobResponse(store, digest, 0, size, headers, 200, self._sent_meter(call))
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return BlobResponse(store, digest, start, end - start + 1, headers, 206, self._sent_meter(call))

    def _sent_meter(self, call: Call) -> Callable[[int], None] | None:
        meter, ref = self.meter, call.ref
        return None if meter is None else lambda size: meter.sent(ref, size)

    async def delete_blob(self, call: Call) -> Response:
        self.authorize(call, "ecr:BatchDeleteImage")
        await run_in_threadpool(self.registry.delete_blob, call.ref, Digest.parse(call.params["digest"]))
        return Response(status_code=202, headers={"Content-Length": "0"})

    # ------------------------------------------------------------------------------------ uploads

    async def start_upload(self, call: Call) -> Response:
        self.authorize(call, "ecr:InitiateLayerUpload")
        query = call.request.query_params
        mount, source = query.get("mount"), query.get("from")
        settings = self.registry.account_settings
        if mount and not await run_in_threadpool(settings.blob_mounting, call.ref.account_id, call.ref.region):
            Digest.parse(mount)  # BLOB_MOUNTING is DISABLED: no mount, but a malformed digest is still a 400
        elif mount and source:
            mounted = await self.try_mount(call, Digest.parse(mount), check_repository_name(source))
            if mounted is not None:
                return mounted
        elif mount:
            mounted = await self.try_anonymous_mount(call, Digest.parse(mount))
            if mounted is not None:
                return mounted
        digest = Digest.parse(query["digest"]) if query.get("digest") else None
        upload_id = await run_in_threadpool(self.registry.start_upload, call.ref)
        if digest is not None:
            return await self.monolithic_upload(call, upload_id, digest)
        return self.upload_accepted(call.path_name, upload_id, 0)

    async def try_mount(self, call: Call, digest: Digest, source_name: str) -> Response | None:
        try:
            source = self.repository_ref(call.request, call.caller, source_name)
            self.authorize(call, "ecr:GetDownloadUrlForLayer", source, source_name)
        except DockyardError:
            return None  # no read access to the source: the client uploads instead (spec: 202, not an error)
        if not await run_in_threadpool(self.registry.mount_blob, call.ref, digest, source):
            return None
        return _created(call.path_name, "blobs", digest)

    async def try_anonymous_mount(self, call: Call, digest: Digest) -> Response | None:
        """`mount` without `from`: any repository of this registry holding the blob that the caller may read."""
        # The path spells a source as it spells the target (`public/<alias>/` for public ones): Bearer grants
        # name repositories that way.
        prefix = call.path_name.removesuffix(call.ref.name)

        def readable(source: RepositoryRef) -> bool:
            try:
                self.authorize(call, "ecr:GetDownloadUrlForLayer", source, prefix + source.name)
            except DockyardError:
                return False
            return True

        if not await run_in_threadpool(self.registry.mount_from_any, call.ref, digest, readable):
            return None
        return _created(call.path_name, "blobs", digest)

    async def monolithic_upload(self, call: Call, upload_id: str, digest: Digest) -> Response:
        """A single POST carrying the whole blob: on any failure its session goes too, leaving nothing behind."""
        try:
            appender = await run_in_threadpool(self.registry.begin_append, call.ref, upload_id, 0)
            received = await receive_into(call.request, appender)
            self.registry.check_declared_size(_content_length(call.request), received)
            await run_in_threadpool(self.registry.complete_upload, call.ref, upload_id, digest)
        except BaseException:
            with contextlib.suppress(DockyardError):
                await run_in_threadpool(self.registry.cancel_upload, call.ref, upload_id)
            raise
        return _created(call.path_name, "blobs", digest)

    async def upload_status(self, call: Call) -> Response:
        self.authorize(call, "ecr:UploadLayerPart")
        size = await run_in_threadpool(self.registry.upload_size, call.ref, call.params["upload"])
        return self.upload_accepted(call.path_name, call.params["upload"], size, status=204)

    async def upload_chunk(self, call: Call) -> Response:
        self.authorize(call, "ecr:UploadLayerPart")
        appender = await self.open_chunk(call)
        await receive_into(call.request, appender)
        return self.upload_accepted(call.path_name, call.params["upload"], appender.size)

    async def chunk_start(self, call: Call) -> int | None:
        """The first byte of a chunk from `Content-Range` (checked against `Content-Length`), or None."""
        header = call.request.headers.get("content-range")
        if header is None:
            return None
        match = _CONTENT_RANGE_RE.fullmatch(header.strip())
        if match is None:
            raise BlobUploadInvalid(f"malformed Content-Range {header!r}; expected <start>-<end>")
        start, end = parse_decimal(match.group(1)), parse_decimal(match.group(2))
        if start is None or end is None:
            raise BlobUploadInvalid(f"Content-Range {header[:80]!r} names a position beyond any blob")
        declared = _content_length(call.request)
        if end < start or (declared is not None and declared != end - start + 1):
            raise BlobUploadInvalid(f"Content-Range {header!r} does not match Content-Length {declared}")
        return start

    async def open_chunk(self, call: Call) -> BlobAppender:
        """Open the upload at the chunk's start; an out-of-order chunk gets 416 with where to resume."""
        upload_id = call.params["upload"]
        start = await self.chunk_start(call)
        try:
            return await run_in_threadpool(self.registry.begin_append, call.ref, upload_id, start)
        except RangeInvalid as error:
            size = error.detail["received"]
            error.headers.update({"Location": _upload_location(call.path_name, upload_id), "Range": _range(size)})
            raise

    async def finish_upload(self, call: Call) -> Response:
        self.authorize(call, "ecr:CompleteLayerUpload")
        upload_id = call.params["upload"]
        digest_text = call.request.query_params.get("digest")
        if not digest_text:
            raise DigestInvalid("the digest query parameter is required to complete an upload")
        digest = Digest.parse(digest_text)
        if _content_length(call.request) != 0 or "transfer-encoding" in call.request.headers:
            await receive_into(call.request, await self.open_chunk(call))
        await run_in_threadpool(self.registry.complete_upload, call.ref, upload_id, digest)
        return _created(call.path_name, "blobs", digest)

    async def cancel_upload(self, call: Call) -> Response:
        self.authorize(call, "ecr:UploadLayerPart")
        await run_in_threadpool(self.registry.cancel_upload, call.ref, call.params["upload"])
        return Response(status_code=204)

    def upload_accepted(self, name: str, upload_id: str, size: int, status: int = 202) -> Response:
        return Response(
            status_code=status,
            headers={
                "Location": _upload_location(name, upload_id),
                "Range": _range(size),
                "Docker-Upload-UUID": upload_id,
                "Content-Length": "0",
            },
        )

    # ------------------------------------------------------------------------------------ manifests

    async def get_manifest(self, call: Call) -> Response:
        self.authorize(call, "ecr:BatchGetImage")
        record = self.registry.manifest(call.ref, call.params["reference"])
        headers = {"Docker-Content-Digest": str(record.digest), "ETag": f'"{record.digest}"'}
        if call.request.method == "HEAD":
            headers["Content-Length"] = str(record.size)
            return Response(status_code=200, headers=headers, media_type=record.media_type)
        repository = self.registry.repository(call.ref)
        content = self.registry.cached_manifest_content(repository, record)
        if content is None:
            content = await run_in_threadpool(self.registry.manifest_content, repository, record)
        now = self.registry.clock()
        if self.registry.pull_needs_recording(record.last_pulled_at, now):
            puller = call.principal.arn if call.principal is not None else None
            await run_in_threadpool(
                self.registry.note_pull, call.ref, record.digest, record.last_pulled_at, now, puller
            )
        if self.meter is not None:
            self.meter.pulled(call.ref, len(content))
        return Response(content, status_code=200, headers=headers, media_type=record.media_type)

    async def put_manifest(self, call: Call) -> Response:
        self.authorize(call, "ecr:PutImage")
        try:
            raw = await read_limited(call.request, MAX_MANIFEST_BYTES)
        except BodyIncomplete as error:
            raise ManifestInvalid(error.message) from None
        tag_params = call.request.query_params.getlist("tag")
        pushed = await run_in_threadpool(
            self.registry.put_manifest,
            call.ref,
            call.params["reference"],
            raw,
            call.request.headers.get("content-type"),
            tag_params,
        )
        if self.meter is not None:
            self.meter.pushed(call.ref)
        response = _created(call.path_name, "manifests", pushed.digest)
        if pushed.subject is not None:
            response.headers["OCI-Subject"] = str(pushed.subject)
        if tag_params:  # the spec's push with `tag=` parameters: name every tag the push set
            response.headers["OCI-Tag"] = ", ".join(pushed.tags)
        return response

    async def delete_manifest(self, call: Call) -> Response:
        self.authorize(call, "ecr:BatchDeleteImage")
        removed = await run_in_threadpool(self.registry.delete_manifest, call.ref, call.params["reference"])
        if call.principal is not None:  # authorised above: never None here
            self.authorizer.record_result(
                call.principal,
                "ecr:BatchDeleteImage",
                call.ref,
                removed.response_elements(),
                request_context(call.request),
            )
        return Response(status_code=202, headers={"Content-Length": "0"})

    async def list_tags(self, call: Call) -> Response:
        self.authorize(call, "ecr:ListImages")
        limit = page_size(call.request.query_params.get("n"))
        after = call.request.query_params.get("last") or None
        page = self.registry.tags(call.ref, after, limit)
        path = f"/v2/{call.path_name}/tags/list"
        headers = _next_link(path, limit, page.items) if page.has_more and limit else {}
        return _json({"name": call.path_name, "tags": page.items}, headers=headers)

    async def referrers(self, call: Call) -> Response:
        self.authorize(call, "ecr:BatchGetImage")
        digest = Digest.parse(call.params["digest"])
        artifact_type = call.request.query_params.get("artifactType") or None
        index = self.registry.referrers(call.ref, digest, artifact_type)
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
        return _json(index, media_type="application/vnd.oci.image.index.v1+json", headers=headers)


# ---------------------------------------------------------------------------------------- request bodies


async def receive_into(request: Request, appender: BlobAppender) -> int:
    """Stream the request body into an upload, hashing and writing in a worker thread.

    The next batch is received while the previous one is hashed and written (hashlib releases the GIL), so
    receiving and hashing overlap; batches are written strictly in order. Returns the bytes received.
    """
    received = 0
    pending: asyncio.Future[None] | None = None
    try:
        async for batch in _batches(body_chunks(request), WRITE_BATCH):
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(run_in_threadpool(appender.write, batch))
            received += len(batch)
        if pending is not None:
            await pending
    except BaseException:
        if pending is not None and not pending.done():
            await asyncio.shield(pending)
        await run_in_threadpool(appender.abandon)
        raise
    await run_in_threadpool(appender.finish)
    BYTES_RECEIVED.inc(received)
    return received


async def drain_body(request: Request, limit: int) -> None:
    """Read and discard what is left of the request body, up to `limit` bytes."""
    drained = 0
    with contextlib.suppress(RuntimeError, ClientDisconnect):  # RuntimeError: the body was read to its end
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > limit:
                return


async def _batches(stream: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    parts: list[bytes] = []
    buffered = 0
    async for chunk in stream:
        parts.append(chunk)
        buffered += len(chunk)
        if buffered >= size:
            yield b"".join(parts)
            parts.clear()
            buffered = 0
    if buffered:
        yield b"".join(parts)


async def read_limited(request: Request, limit: int) -> bytes:
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise ManifestTooLarge(f"manifest of {declared} bytes exceeds the {limit}-byte limit")
    parts: list[bytes] = []
    total = 0
    async for chunk in body_chunks(request):
        total += len(chunk)
        if total > limit:
            raise ManifestTooLarge(f"manifest exceeds the {limit}-byte limit")
        parts.append(chunk)
    return b"".join(parts)


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    length = parse_decimal(value)
    if length is None:
        raise BlobUploadInvalid(f"malformed Content-Length {value[:80]!r}")
    return length


# ---------------------------------------------------------------------------------------- responses


class BlobResponse(Response):
    """A blob (or a slice of it): zero-copy `pathsend` when the server and store allow, else streamed."""

    def __init__(
        self,
        store: BlobStore,
        digest: Digest,
        offset: int,
        length: int,
        headers: dict[str, str],
        status: int,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(status_code=status, headers=headers, media_type="application/octet-stream")
        self.headers["content-length"] = str(length)
        self.store = store
        self.digest = digest
        self.offset = offset
        self.length = length
        self.on_sent = on_sent  # told the bytes sent once the response ends (also when the client went away)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        try:
            path = self.store.local_path(self.digest)
            whole = self.offset == 0 and self.status_code == 200
            if path is not None and whole and "http.response.pathsend" in scope.get("extensions", {}):
                await send({"type": "http.response.pathsend", "path": path})
                sent = self.length
                BYTES_SENT.inc(self.length)
                return
            chunks: Iterator[bytes] = self.store.read_blob(self.digest, self.offset, self.length)
            async for chunk in iterate_in_threadpool(chunks):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                BYTES_SENT.inc(len(chunk))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if self.on_sent is not None and sent:
                self.on_sent(sent)


def _requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a blob GET asks for; None for the whole blob (also for multi-range asks)."""
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        start, end = max(size - _position(last), 0), size - 1
    else:
        start, end = _position(first), min(_position(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(
            f"range {header!r} is outside the blob of {size} bytes", headers={"Content-Range": f"bytes */{size}"}
        )
    return start, end


def _position(digits: str) -> int:
    """A byte position of a `Range` header; one past any blob's end stands for any larger number."""
    position = parse_decimal(digits)
    return MAX_INT64 if position is None else position


def _head_response(
    status: int, length: int, headers: dict[str, str], byte_range: tuple[int, int] | None, size: int
) -> Response:
    response = Response(status_code=status, headers=headers, media_type="application/octet-stream")
    response.headers["content-length"] = str(length)
    if byte_range is not None:
        response.headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{size}"
    return response


def _json(body: Any, media_type: str = "application/json", headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body).encode(), media_type=media_type, headers=headers)


def _created(name: str, kind: str, digest: Digest) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": f"/v2/{name}/{kind}/{digest}",
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        },
    )


def _range(size: int) -> str:
    """The `Range` of an upload: the inclusive range received so far (`0-0` also when nothing arrived)."""
    return f"0-{max(size - 1, 0)}"


def _upload_location(name: str, upload_id: str) -> str:
    """`name` as the request spelled it (`public/<alias>/…` for public repositories)."""
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def _next_link(path: str, limit: int, items: list[str]) -> dict[str, str]:
    query = urlencode({"n": limit, "last": items[-1]}, quote_via=quote)
    return {"Link": f'<{path}?{query}>; rel="next"'}
