"""Importing an image from a vendor's URL: fetch it safely, then take it in like an upload.

The fetch streams the response into the content-addressed store exactly as an upload does
(:meth:`FirmwareStore.put`, with the same size limit check before a chunk is buffered),
and :func:`evota.firmware.intake.accept` then applies the same trust policy. What is
particular to a fetch the server makes on an operator's behalf:

- SSRF: every hop's URL and every address its host resolves to are checked by the pure
  :mod:`evota.firmware.import_policy`; the name is resolved once and the connection goes to
  the address that was checked (the URL's host is replaced by that address, while the TLS
  SNI, the certificate check and the ``Host`` header keep the name), so DNS cannot answer
  differently between the check and the connect.
- Redirects are followed by hand, at most :data:`MAX_REDIRECTS`, each hop checked again.
- A connect/read timeout bounds each wait and a total deadline the whole fetch, so a server
  trickling bytes cannot hold an import forever; the body is read raw (``Accept-Encoding:
  identity``), never decompressed, so a small response cannot expand past the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import hashlib
import socket
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urljoin

import certifi
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from evota.files import safe_filename
from evota.firmware import import_policy, intake
from evota.firmware import repository as repo
from evota.firmware.import_policy import Network, PolicyError
from evota.firmware.intake import IntakeError, Refusal
from evota.firmware.storage import FirmwareStore, StoredBlob, TooLarge

__all__ = [
    "MAX_REDIRECTS",
    "FetchError",
    "FetchPolicy",
    "FetchProblem",
    "Fetched",
    "ImportSlots",
    "Resolver",
    "fetch_bytes",
    "fetch_into",
    "import_firmware",
]

MAX_REDIRECTS: Final = 5
_USER_AGENT: Final = "evota-firmware-import"

_T = TypeVar("_T")
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: the system resolver by default, replaceable in tests."""


class FetchProblem(enum.StrEnum):
    """Why a fetch failed (the API gives each its status and title)."""

    SCHEME = "scheme"  # not https (or http where allowed)
    URL = "url"  # malformed, credentials, no host
    ADDRESS = "address"  # SSRF: a private, loopback, ... address
    REDIRECTS = "redirects"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    STATUS = "status"  # the server answered, but not 200
    UNREACHABLE = "unreachable"  # DNS, connect, TLS
    ENCODING = "encoding"  # a compressed body although identity was asked for
    SHA256 = "sha256"  # the bytes are not the expected ones
    BUSY = "busy"  # max_concurrent imports are running already
    UNAVAILABLE = "unavailable"  # cluster: the imports running cannot be counted (Redis down)


class FetchError(Exception):
    """A fetch refused or failed: ``problem`` says why, ``detail`` in a sentence, ``field``
    which input it is about (``url`` for everything but the expected digest)."""

    def __init__(self, problem: FetchProblem, detail: str, field: str = "url") -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """The settings a fetch obeys (``Settings.firmware_fetch_policy`` builds it)."""

    max_bytes: int
    timeout: float = 30.0  # seconds for each connect and each read
    deadline: float = 600.0  # seconds for the whole fetch, redirects included
    allow_http: bool = False
    allow_networks: tuple[Network, ...] = ()
    ca_file: Path | None = None  # trusted in addition to the public CAs (certifi)
    max_concurrent: int = 4  # image imports at once per store (API and feeds together)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched image in the store, and where it came from."""

    blob: StoredBlob
    url: str  # the last hop, as requested
    host: str
    address: str
    certificate_sha256: str | None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address of ``host`` (in the resolver's order, without duplicates)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a label the IDNA codec refuses
        raise FetchError(FetchProblem.UNREACHABLE, f"cannot resolve {host}: {exc}") from None
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def _peer_certificate_sha256(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).hexdigest() if der else None


def _policy_error(exc: PolicyError) -> FetchError:
    problem = {"scheme": FetchProblem.SCHEME, "address": FetchProblem.ADDRESS}.get(
        exc.kind, FetchProblem.URL
    )
    return FetchError(problem, exc.reason)


async def _pinned_request(
    client: httpx.AsyncClient,
    url: str,
    policy: FetchPolicy,
    resolve: Resolver,
    *,
    method: str = "GET",
    json_body: Any = None,
) -> tuple[httpx.Request, import_policy.Target, str]:
    """Check the URL, resolve its host once, check every address; a request to the first."""
    try:
        target = import_policy.target(url, policy.allow_http)
        if target.ip_literal:
            addresses = [target.host]
        else:
            addresses = await resolve(target.host, target.port)
        address = import_policy.pick_address(target.host, addresses, policy.allow_networks)
    except PolicyError as exc:
        raise _policy_error(exc) from None
    host = f"[{address}]" if ":" in address else address
    pinned = f"{target.scheme}://{host}:{target.port}{target.path}"
    extensions = {}
    if target.scheme == "https" and not target.ip_literal:
        extensions["sni_hostname"] = target.host  # TLS name and certificate check
    request = client.build_request(
        method,
        pinned,
        headers={
            "Host": target.host_header,
            "Accept-Encoding": "identity",
            "User-Agent": _USER_AGENT,
        },
        json=json_body,
        extensions=extensions,
    )
    return request, target, address


def _check_body(response: httpx.Response, max_bytes: int) -> None:
    """Before reading: no compressed body, no declared length over the limit."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(
            FetchProblem.ENCODING,
            f"the server sent the body {encoding}-encoded although identity was asked for",
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(
            FetchProblem.TOO_LARGE,
            f"the body is {declared} bytes, over the limit of {max_bytes} bytes",
        )


def _too_large(max_bytes: int) -> FetchError:
    return FetchError(FetchProblem.TOO_LARGE, f"the body exceeds the limit of {max_bytes} bytes")


async def _into_store(response: httpx.Response, store: FirmwareStore, max_bytes: int) -> StoredBlob:
    _check_body(response, max_bytes)
    chunks: AsyncIterator[bytes] = response.aiter_raw()
    try:
        return await store.put(chunks, max_bytes=max_bytes)
    except TooLarge:
        raise _too_large(max_bytes) from None


async def _into_memory(response: httpx.Response, max_bytes: int) -> bytes:
    """A small body (a feed, a signature), never more than ``max_bytes`` held."""
    _check_body(response, max_bytes)
    data = bytearray()
    async for chunk in response.aiter_raw():
        if len(data) + len(chunk) > max_bytes:
            raise _too_large(max_bytes)
        data += chunk
    return bytes(data)


async def _fetch(
    url: str,
    policy: FetchPolicy,
    resolve: Resolver,
    consume: Callable[[httpx.Response], Awaitable[_T]],
) -> tuple[_T, str, str, str, str | None]:
    """GET ``url`` under the policy; ``consume`` reads the 200 answer's body.

    Returns what ``consume`` returned, the last hop's URL, its host, the address connected
    to and the server certificate's SHA-256.
    """
    timeout = httpx.Timeout(policy.timeout)
    async with httpx.AsyncClient(
        verify=_ssl_context(policy.ca_file),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment: it would bypass the address check
    ) as client:
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            request, target, address = await _pinned_request(client, current, policy, resolve)
            response = await client.send(request, stream=True)
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    if not location:
                        raise FetchError(FetchProblem.STATUS, "a redirect without a Location")
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise FetchError(
                        FetchProblem.STATUS,
                        f"{target.host} answered {response.status_code} "
                        f"{response.reason_phrase}".rstrip(),
                    )
                certificate = _peer_certificate_sha256(response)
                body = await consume(response)
                return body, current, target.host, address, certificate
            finally:
                await response.aclose()
        raise FetchError(FetchProblem.REDIRECTS, f"more than {MAX_REDIRECTS} redirects")


async def fetch_into(
    store: FirmwareStore,
    url: str,
    policy: FetchPolicy,
    *,
    resolve: Resolver | None = None,
) -> Fetched:
    """Fetch ``url`` into the store under the policy; :class:`FetchError` when refused.

    Nothing is left in the store's temp directory on any failure (the store's ``put``
    removes its partial file, also when the deadline cancels it).
    """

    async def consume(response: httpx.Response) -> StoredBlob:
        return await _into_store(response, store, policy.max_bytes)

    blob, last, host, address, certificate = await _guarded(url, policy, resolve, consume)
    return Fetched(blob, last, host, address, certificate)


async def post_json(
    url: str, body: Any, policy: FetchPolicy, *, resolve: Resolver | None = None
) -> int:
    """POST ``body`` as JSON to ``url`` under the same address rules as a fetch (the host
    resolved once, every address checked, the connection pinned to the checked one; no
    redirect followed, no proxy from the environment); returns the status code.

    For outbound notifications whose URL an operator wrote (a playbook's escalation
    webhook): without the check, anyone allowed to write one could make evota call
    services on its own network. :class:`FetchError` when refused or unreachable.
    """
    async with httpx.AsyncClient(
        verify=_ssl_context(policy.ca_file),
        timeout=httpx.Timeout(policy.timeout),
        follow_redirects=False,
        trust_env=False,
    ) as client:
        request, _target, _address = await _pinned_request(
            client, url, policy, resolve or system_resolver, method="POST", json_body=body
        )
        try:
            response = await client.send(request)
        except httpx.HTTPError as exc:
            raise FetchError(FetchProblem.UNREACHABLE, f"{type(exc).__name__}") from None
        return response.status_code


async def fetch_bytes(url: str, policy: FetchPolicy, *, resolve: Resolver | None = None) -> bytes:
    """A small document (a release feed, a detached signature) into memory, at most
    ``policy.max_bytes``, under the same rules as an image; :class:`FetchError` when refused.
    """

    async def consume(response: httpx.Response) -> bytes:
        return await _into_memory(response, policy.max_bytes)

    body, *_ = await _guarded(url, policy, resolve, consume)
    return body


async def _guarded(
    url: str,
    policy: FetchPolicy,
    resolve: Resolver | None,
    consume: Callable[[httpx.Response], Awaitable[_T]],
) -> tuple[_T, str, str, str, str | None]:
    """:func:`_fetch` within the deadline, its failures as :class:`FetchError`."""
    try:
        async with asyncio.timeout(policy.deadline):
            return await _fetch(url, policy, resolve or system_resolver, consume)
    except TimeoutError:
        raise FetchError(
            FetchProblem.TIMEOUT, f"the fetch did not finish within {policy.deadline:g} s"
        ) from None
    except httpx.TimeoutException as exc:
        raise FetchError(
            FetchProblem.TIMEOUT, f"no answer within {policy.timeout:g} s ({type(exc).__name__})"
        ) from None
    except httpx.HTTPError as exc:
        raise FetchError(
            FetchProblem.UNREACHABLE, f"cannot fetch: {type(exc).__name__}: {exc}"
        ) from None
    except (httpx.InvalidURL, ValueError) as exc:  # a name the TLS layer or httpx refuses
        raise FetchError(FetchProblem.URL, f"cannot fetch this URL: {exc}") from None


class ImportSlots(Protocol):
    """Where imports at once are counted: this process (the default, per store) or, in a
    cluster, every node's (:class:`evota.cluster.limits.SharedImportSlots`)."""

    def hold(self, limit: int) -> AbstractAsyncContextManager[None]:
        """A slot while the block runs; FetchError BUSY when ``limit`` imports run already,
        UNAVAILABLE when that cannot be known."""
        ...


async def import_firmware(
    engine: AsyncEngine,
    store: FirmwareStore,
    submission: intake.Submission,
    url: str,
    policy: FetchPolicy,
    now: Callable[[], dt.datetime],
    *,
    by: str | None,
    expected_sha256: str | None = None,
    resolve: Resolver | None = None,
    slots: ImportSlots | None = None,
) -> repo.FirmwareRecord:
    """Fetch an image and add it like an upload: the trust policy, then the repository.

    Refused before fetching when the vendor already has the version or ``policy.
    max_concurrent`` imports run (in ``slots``, else in this process); after fetching when
    the digest is not ``expected_sha256`` or the trust policy refuses it, and then the
    fetched bytes are discarded (unless another image uses them). Raises
    :class:`FetchError`, :class:`~evota.firmware.intake.IntakeError` or a repository error.
    """
    if await repo.version_exists(engine, submission.vendor, submission.version):
        raise IntakeError(
            Refusal.EXISTS, f"{submission.vendor} firmware {submission.version} exists", "version"
        )
    hold = slots.hold(policy.max_concurrent) if slots is not None else _local_slot(store, policy)
    async with hold:
        return await _import(
            engine, store, submission, url, policy, now, by, expected_sha256, resolve
        )


@contextlib.asynccontextmanager
async def _local_slot(store: FirmwareStore, policy: FetchPolicy) -> AsyncIterator[None]:
    running = _in_flight.get(store, 0)
    if running >= policy.max_concurrent:
        raise FetchError(
            FetchProblem.BUSY,
            f"{running} imports are running (the limit); try again when one has finished",
        )
    _in_flight[store] = running + 1
    try:
        yield
    finally:
        _in_flight[store] -= 1


# A short request makes the server download up to max_bytes: imports in flight are bounded
# so an operator's loop cannot fill the disk or the sockets (a counter per store, so each
# runtime, and each test, has its own; a cluster counts every node's in Redis).
_in_flight: weakref.WeakKeyDictionary[FirmwareStore, int] = weakref.WeakKeyDictionary()


async def _import(
    engine: AsyncEngine,
    store: FirmwareStore,
    submission: intake.Submission,
    url: str,
    policy: FetchPolicy,
    now: Callable[[], dt.datetime],
    by: str | None,
    expected_sha256: str | None,
    resolve: Resolver | None,
) -> repo.FirmwareRecord:
    fetched = await fetch_into(store, url, policy, resolve=resolve)
    try:
        if expected_sha256 is not None and fetched.blob.sha256 != expected_sha256.lower():
            raise FetchError(
                FetchProblem.SHA256,
                f"the fetched image has SHA-256 {fetched.blob.sha256}, not {expected_sha256}",
                "sha256",
            )
        source = repo.Source(
            url=import_policy.record_url(fetched.url),
            host=fetched.host,
            address=fetched.address,
            certificate_sha256=fetched.certificate_sha256,
            fetched_at=now(),
            fetched_by=by,
        )
        filename = submission.filename or _filename(fetched.url)
        taken = dataclasses.replace(submission, source=source, filename=filename)
        return await intake.accept(engine, store, taken, fetched.blob, now())
    except BaseException:
        await intake.discard(engine, store, fetched.blob)
        raise


def _filename(url: str) -> str | None:
    """The last path segment as the image's label (evota.files.safe_filename cleans it)."""
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return safe_filename(name) if name else None
