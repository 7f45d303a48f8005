"""An object store in an S3 bucket (AWS S3, MinIO, moto's server), through s3fs's async client.

The commit protocol needs nothing but S3's own conditional writes: put-if-absent sends
``If-None-Match: *`` and put-if-match sends ``If-Match: <etag>``, so the server decides
every race, between tasks, processes and machines alike. Each operation is one request
(``get`` is one GET, never a HEAD first), except ``list`` and ``delete_prefix``, which
page through listings of at most 1,000 keys.

s3fs supplies the configuration (``storage_options`` are :class:`s3fs.S3FileSystem`'s
keyword arguments: ``endpoint_url``, ``key``, ``secret``, ``client_kwargs``,
``config_kwargs``...; anything not given comes from botocore's usual environment variables
and config files) and the aiobotocore client, which this module calls directly, so
botocore's retry policy is the only one (``AWS_MAX_ATTEMPTS``, ``AWS_RETRY_MODE`` or
``config_kwargs={"retries": ...}``). A conditional write that botocore had to retry is
ambiguous: the attempt whose answer was lost may have landed. When such a write is then
refused, the store raises a *transient* ``StoreError`` rather than a false
``ObjectExistsError`` or ``PreconditionFailedError``, so the caller reads back to know.

ETags are S3's (quoted MD5s for single-part objects), so writing the same bytes again
gives the same ETag, as with :class:`~durable.store.LocalStore`'s content hashes.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncGenerator, Iterator, Mapping

__all__ = ["S3Store"]

log = logging.getLogger("durable.store.s3")

# Error codes a retry may get past (besides every 5xx and 429). ConditionalRequestConflict
# and OperationAborted (409) mean another conditional write of the key is in flight.
_TRANSIENT_CODES = frozenset(
    {
        "ConditionalRequestConflict",
        "InternalError",
        "OperationAborted",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_TRANSIENT_BOTO = (BotoConnectionError, HTTPClientError, IncompleteReadError)
_DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
_PROBE_PREFIX = "_probe"
_WRONG_ETAG = '"00000000000000000000000000000000"'  # the MD5 of no object we write


class S3Store:
    """An :class:`~durable.store.ObjectStore` kept in an S3 bucket under a key prefix.

    ``url`` is ``s3://bucket`` or ``s3://bucket/prefix``; keys live at ``prefix/key``.
    ``storage_options`` go to :class:`s3fs.S3FileSystem` (for example
    ``{"endpoint_url": "http://127.0.0.1:9000", "key": ..., "secret": ...}``).

    The client is made on first use, inside the running event loop, and released by
    :meth:`close`. Before its first conditional write the store runs
    :meth:`check_conditional_writes` once, and refuses to go on against an endpoint
    that would silently overwrite.
    """

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self._url = url
        self._bucket, self._root = _parse_url(url)
        self._options = dict(storage_options or {})
        self._fs: Any = None  # s3fs.S3FileSystem, made on first use
        self._closed = False
        self._page_size: int | None = None  # MaxKeys for listings; None: the server's 1,000
        self._verified = False
        self._refusal: str | None = None
        self._conditional_deletes = True  # False: the probe found If-Match on DELETE ignored
        self._probe_lock = anyio.Lock()

    @property
    def url(self) -> str:
        """The URL this store was opened from."""
        return self._url

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix under which the store keeps its objects ("" for the whole bucket)."""
        return self._root

    def __repr__(self) -> str:
        return f"S3Store({self._url!r})"

    def sibling(self) -> S3Store:
        """The same bucket and prefix through a connection pool of its own: for traffic
        that must not queue behind this store's (a fleet's lease renewals)."""
        sibling = S3Store(self._url, storage_options=self._options)
        sibling._verified, sibling._refusal = self._verified, self._refusal
        sibling._conditional_deletes = self._conditional_deletes
        sibling._page_size = self._page_size
        return sibling

    # -- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        """Return the object's bytes (one GET); raise ``ObjectNotFoundError`` if absent."""
        return (await self.get_with_etag(key))[0]

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return the object's bytes and ETag (one GET); ``ObjectNotFoundError`` if absent."""
        full = self._key(key)
        with self._errors("read", key):
            response = await self._call("get_object", Bucket=self._bucket, Key=full)
            body = response["Body"]
            try:
                data = await body.read()
            finally:
                body.close()
        return data, str(response["ETag"])

    # -- writes ---------------------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> str:
        """Write the object unconditionally (one PUT); return its new ETag."""
        full = self._key(key)
        with self._errors("write", key):
            response = await self._call(
                "put_object", Bucket=self._bucket, Key=full, Body=_as_bytes(data)
            )
        return str(response["ETag"])

    async def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if the key is absent (``If-None-Match: *``); else ``ObjectExistsError``."""
        full = self._key(key)
        await self._ensure_conditional_writes()
        return await self._put_if_absent(key, full, data)

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the ETag is ``etag`` (``If-Match``); else ``PreconditionFailedError``.

        Raises ``ObjectNotFoundError`` when the key is absent.
        """
        full = self._key(key)
        await self._ensure_conditional_writes()
        return await self._put_if_match(key, full, data, etag)

    async def _put_if_absent(self, key: str, full: str, data: bytes) -> str:
        with self._errors("create", key):
            response = await self._call(
                "put_object", Bucket=self._bucket, Key=full, Body=_as_bytes(data), IfNoneMatch="*"
            )
        return str(response["ETag"])

    async def _put_if_match(self, key: str, full: str, data: bytes, etag: str) -> str:
        with self._errors("update", key):
            response = await self._call(
                "put_object", Bucket=self._bucket, Key=full, Body=_as_bytes(data), IfMatch=etag
            )
        return str(response["ETag"])

    # -- listing and deleting -------------------------------------------------------------

    async def list(self, prefix: str) -> list[str]:
        """Return the sorted names of the immediate children of ``prefix``.

        One LIST request with delimiter ``/`` per 1,000 children; a missing prefix lists
        as empty. Names starting with a dot (never written by durable) are skipped.
        """
        prefix = prefix.rstrip("/")
        base = self._key(prefix) + "/" if prefix else (f"{self._root}/" if self._root else "")
        names: set[str] = set()
        with self._errors("list", prefix):
            async with contextlib.aclosing(self._pages(base, delimiter="/")) as pages:
                async for page in pages:
                    names.update(entry["Key"][len(base) :] for entry in page.get("Contents", ()))
                    names.update(
                        entry["Prefix"][len(base) : -1] for entry in page.get("CommonPrefixes", ())
                    )
        return sorted(name for name in names if name and name[0] != ".")

    async def list_after(
        self, prefix: str, after: str, limit: int, *, starting: str = ""
    ) -> builtins.list[str]:
        """The first ``limit`` names of :meth:`list` that sort after ``after`` (and
        start with ``starting``): one LIST request per 1,000 names, however many come
        before ``after``."""
        prefix = prefix.rstrip("/")
        base = self._key(prefix) + "/" if prefix else (f"{self._root}/" if self._root else "")
        kwargs: dict[str, Any] = {
            "Bucket": self._bucket, "Prefix": base + starting, "Delimiter": "/",
        }  # fmt: skip
        if after:
            kwargs["StartAfter"] = base + after
        names: set[str] = set()
        with self._errors("list", prefix):
            while len(names) < limit:
                kwargs["MaxKeys"] = min(1000, limit + 1 - len(names))
                page = await self._call("list_objects_v2", **kwargs)
                found = [e["Key"][len(base) :] for e in page.get("Contents", ())]
                found += [e["Prefix"][len(base) : -1] for e in page.get("CommonPrefixes", ())]
                names.update(n for n in found if n > after and n[0] != ".")
                if not page.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(names)[:limit]

    async def delete(self, key: str) -> None:
        """Delete one object (one DELETE); a missing key is not an error."""
        full = self._key(key)
        with self._errors("delete", key):
            await self._call("delete_object", Bucket=self._bucket, Key=full)

    async def delete_if_match(self, key: str, etag: str) -> None:
        """Delete only if the ETag is ``etag`` (one DELETE with ``If-Match``); else
        ``PreconditionFailedError``, or ``ObjectNotFoundError`` when the key is absent.

        On an endpoint whose DELETE ignores ``If-Match`` (the probe finds out), the
        store reads the ETag and deletes if it matches: not atomic, so a request that
        arrives late may still remove what was written between the two (logged once).
        """
        full = self._key(key)
        await self._ensure_conditional_writes()
        if not self._conditional_deletes:
            _, current = await self.get_with_etag(key)
            if current != etag:
                raise PreconditionFailedError(key)
            await self.delete(key)
            return
        await self._delete_if_match(key, full, etag)

    async def _delete_if_match(self, key: str, full: str, etag: str) -> None:
        with self._errors("remove", key):
            await self._call("delete_object", Bucket=self._bucket, Key=full, IfMatch=etag)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix/``: a recursive listing, deleted in batches."""
        prefix = prefix.rstrip("/")
        base = self._key(prefix) + "/"
        with self._errors("delete", prefix):
            async with contextlib.aclosing(self._pages(base, delimiter=None)) as pages:
                async for page in pages:
                    keys = [entry["Key"] for entry in page.get("Contents", ())]
                    for start in range(0, len(keys), _DELETE_BATCH):
                        batch = keys[start : start + _DELETE_BATCH]
                        response = await self._call(
                            "delete_objects",
                            Bucket=self._bucket,
                            Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                        )
                        errors = response.get("Errors") or []
                        if errors:
                            first = errors[0]
                            raise StoreError(
                                f"cannot delete {len(errors)} object(s) under {prefix!r} in "
                                f"{self._url}: {first.get('Key')!r}: {first.get('Code')}: "
                                f"{first.get('Message')}",
                                key=prefix,
                                transient=True,
                            )

    async def close(self) -> None:
        """Close the client's connections; the store is unusable afterwards."""
        self._closed = True
        fs, self._fs = self._fs, None
        if fs is not None and fs._s3 is not None:
            creator = fs._s3creator
            fs._s3 = None
            await creator.__aexit__(None, None, None)

    # -- the conditional-write probe ------------------------------------------------------

    async def check_conditional_writes(self) -> None:
        """Verify that the endpoint enforces conditional writes, or raise ``StoreError``.

        Writes a probe object under ``_probe/`` with put-if-absent, then requires a second
        put-if-absent of it to raise ``ObjectExistsError`` and a put-if-match with a wrong
        ETag to raise ``PreconditionFailedError``, tries a delete with a wrong ETag, and
        deletes it (five requests). A backend that overwrites instead is refused with a
        non-transient ``StoreError``: it would let two writers commit the same turn. One
        whose DELETE ignores (or refuses) ``If-Match`` is used, with
        :meth:`delete_if_match` reading the ETag before an unconditional delete, and a
        warning. Runs by itself before the first conditional write; call it at start-up
        to fail fast.
        """
        key = f"{_PROBE_PREFIX}/{secrets.token_hex(8)}"
        full = self._key(key)
        try:
            await self._put_if_absent(key, full, b"probe")
        except StoreError as err:
            raise StoreError(
                f"cannot check that {self._url} does conditional writes: {err}",
                key=key,
                transient=err.transient,
            ) from err
        try:
            try:
                await self._put_if_absent(key, full, b"second")
            except ObjectExistsError:
                pass
            else:
                raise self._refuse(
                    "a second put-if-absent of one key overwrote it (If-None-Match is ignored)"
                )
            try:
                await self._put_if_match(key, full, b"third", _WRONG_ETAG)
            except PreconditionFailedError:
                pass
            else:
                raise self._refuse(
                    "a put-if-match with a wrong ETag overwrote the object (If-Match is ignored)"
                )
            await self._probe_deletes(key, full)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self.delete(key)
        self._verified = True

    async def _probe_deletes(self, key: str, full: str) -> None:
        """Whether a DELETE with a wrong ``If-Match`` is refused (AWS S3, moto); if it
        deletes (MinIO, say) or is not understood, conditional deletes fall back."""
        try:
            await self._delete_if_match(key, full, _WRONG_ETAG)
        except PreconditionFailedError:
            self._conditional_deletes = True
            return
        except StoreError as err:
            if err.transient:
                raise
        self._conditional_deletes = False
        log.warning(
            "%s ignores If-Match on DELETE: a purge's deletes are checked, not atomic "
            "(a purge paused for over a minute inside a delete may remove a later start's "
            "object); AWS S3 does conditional deletes",
            self._url,
        )

    async def _ensure_conditional_writes(self) -> None:
        """Run the probe before the first conditional write, until it passes or refuses
        the endpoint; a refusal is for good."""
        if self._verified:
            return
        async with self._probe_lock:
            if self._refusal is not None:
                raise StoreError(self._refusal, transient=False)
            if self._verified:
                return
            await self.check_conditional_writes()

    def _refuse(self, detail: str) -> StoreError:
        """Refuse the endpoint for good, and build the error that says why."""
        self._refusal = (
            f"refusing {self._url}: it does not do conditional writes safely: {detail}. "
            "durable commits each turn with put-if-absent (If-None-Match: *) and updates "
            "with put-if-match (If-Match); without them two writers could both commit. "
            "Use an endpoint that implements If-None-Match and If-Match on PutObject "
            "(AWS S3 does)"
        )
        return StoreError(self._refusal, transient=False)

    # -- plumbing -------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        """Return the bucket key of ``key``, refusing keys no other backend takes."""
        if not key or "\x00" in key or "\\" in key:
            raise _bad_key(key)
        for part in key.split("/"):
            if not part or part[0] == ".":
                raise _bad_key(key)
        return f"{self._root}/{key}" if self._root else key

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        """Send one S3 request through the aiobotocore client s3fs configured."""
        fs = self._filesystem()
        client = await fs.set_session()
        if fs.cache_regions:
            client = await fs.get_s3(self._bucket)
        method = getattr(client, operation)
        return await method(**fs._get_s3_method_kwargs(method, **kwargs))

    def _filesystem(self) -> Any:
        """Return the s3fs filesystem, making it (not yet its client) on first use."""
        if self._closed:
            raise StoreError(f"the store {self._url} is closed", transient=False)
        if self._fs is None:
            from s3fs import S3FileSystem  # type: ignore[import-untyped]  # slow to import

            options = {**self._options, "asynchronous": True, "skip_instance_cache": True}
            try:
                self._fs = S3FileSystem(**options)
            except (TypeError, ValueError, KeyError) as err:
                raise StoreError(
                    f"bad storage_options for {self._url}: {err}", transient=False
                ) from err
        return self._fs

    async def _pages(
        self, base: str, *, delimiter: str | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the pages of a ListObjectsV2 of ``base``, following continuation tokens."""
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": base}
        if delimiter is not None:
            kwargs["Delimiter"] = delimiter
        if self._page_size is not None:
            kwargs["MaxKeys"] = self._page_size
        while True:
            page = await self._call("list_objects_v2", **kwargs)
            yield page
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    @contextlib.contextmanager
    def _errors(self, verb: str, key: str) -> Iterator[None]:
        """Turn botocore, aiohttp and socket errors into ``StoreError`` subclasses.

        ``verb`` is "create" (put-if-absent) or "update" (put-if-match) for the
        conditional writes, whose HTTP 412 means the condition failed.
        """
        try:
            yield
        except StoreError:
            raise
        except ClientError as err:
            _raise_client_error(err, verb, key, self._url)
        except BotoCoreError as err:
            transient = isinstance(err, _TRANSIENT_BOTO)
            raise StoreError(
                f"cannot {verb} {key!r} in {self._url}: {err}", key=key, transient=transient
            ) from err
        except OSError as err:  # TimeoutError, connection resets below botocore
            raise StoreError(
                f"cannot {verb} {key!r} in {self._url}: {type(err).__name__}: {err}",
                key=key,
                transient=True,
            ) from err
        except Exception as err:
            # aiohttp's errors, and botocore's ResponseParserError (a throttling answer can
            # come back as invalid XML), are transient; import neither just to catch them.
            kind = type(err)
            if not (
                kind.__module__.startswith("aiohttp") or kind.__name__ == "ResponseParserError"
            ):
                raise
            raise StoreError(
                f"cannot {verb} {key!r} in {self._url}: {type(err).__name__}: {err}",
                key=key,
                transient=True,
            ) from err


def _raise_client_error(err: Any, verb: str, key: str, url: str) -> NoReturn:
    """Raise the ``StoreError`` for an S3 error response to a request on ``key``."""
    response = err.response
    error = response.get("Error", {})
    metadata = response.get("ResponseMetadata", {})
    code = str(error.get("Code", ""))
    status = int(metadata.get("HTTPStatusCode") or 0)
    retried = int(metadata.get("RetryAttempts") or 0)
    if status == 412 or code == "PreconditionFailed":
        if verb in ("create", "update") and retried:
            # An earlier attempt may have landed and made the condition false.
            raise StoreError(
                f"cannot {verb} {key!r} in {url}: refused after {retried} retried "
                "attempt(s), one of which may have landed; read it back to know",
                key=key,
                transient=True,
            ) from err
        if verb == "create":
            raise ObjectExistsError(key) from err
        if verb == "update":
            raise PreconditionFailedError(key) from err
    if (status == 412 or code == "PreconditionFailed") and verb == "remove":
        raise PreconditionFailedError(key) from err  # (a retried one never deleted: a
        # deleted object answers 404)
    if code in _NOT_FOUND_CODES and verb in ("read", "update", "remove"):
        raise ObjectNotFoundError(key) from err
    transient = status >= 500 or status == 429 or code in _TRANSIENT_CODES
    detail = f"{code} (HTTP {status}): {error.get('Message', '')}"
    if code == "NoSuchBucket":
        detail = f"no bucket {error.get('BucketName', '')!r}: {detail}"
    raise StoreError(
        f"cannot {verb} {key!r} in {url}: {detail}", key=key, transient=transient
    ) from err


def _parse_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into the bucket and the prefix (no outer slashes)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "s3":
        raise StoreError(f"not an s3:// URL: {url!r}", transient=False)
    if "?" in rest or "#" in rest:
        raise StoreError(
            f"store URL {url!r} has options: s3:// URLs take none; pass storage_options",
            transient=False,
        )
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise StoreError(f"store URL {url!r} names no bucket: use s3://BUCKET[/PREFIX]",
                         transient=False)  # fmt: skip
    if prefix:
        for part in prefix.split("/"):
            if not part or part[0] == "." or "\\" in part:
                raise StoreError(
                    f"store URL {url!r} has a bad prefix {prefix!r}: components must be "
                    "non-empty and not start with '.'",
                    transient=False,
                )
    return bucket, prefix


def _as_bytes(data: bytes) -> bytes:
    """Return ``data`` as immutable bytes (a bytearray could change under a retry)."""
    return data if type(data) is bytes else bytes(data)


def _bad_key(key: str) -> StoreError:
    """Build the error for a key no backend accepts."""
    return StoreError(
        f"invalid object key {key!r}: must be relative, '/'-separated, with non-empty "
        "components that do not start with '.'",
        key=key,
        transient=False,
    )
