"""Triton's system shared-memory extension: a client on the same host passes input and output tensors
through POSIX shared memory instead of the request and response bodies.

The client creates an object (`tritonclient.utils.shared_memory.create_shared_memory_region`),
registers a region of it under a name (`register_system_shared_memory(name, key, byte_size, offset)`,
REST `POST /v2/systemsharedmemory/region/{name}/register`, gRPC `SystemSharedMemoryRegister`), then
names that region in an input's or requested output's parameters: `shared_memory_region`,
`shared_memory_byte_size` and optionally `shared_memory_offset`. The server reads the input from the
region and writes the output into it; the answer then carries the output's name, datatype, shape and
those parameters, and no data.

Off unless VISIONZOO_SYSTEM_SHARED_MEMORY=on (Triton's `--allow-client-shm`, also off by default): a
region lets its client make the server read and write any shared-memory object the server's user may
open, so turn it on only for trusted clients on the same host, or in the same pod / IPC namespace (a
container's /dev/shm is its own: `podman run --ipc=host` or a shared pod). The API key applies to
every call.

Regions are read and written through their file descriptor (pread / pwrite), never mapped: a client
that shrinks its object after registering gets an error naming the region, where a mapping would
have killed the server with SIGBUS. At most MAX_REGIONS regions are registered at once.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import AlreadyExists, Forbidden, InvalidInput, NotFound, TooLarge

MAX_REGIONS = 64
REGION_PARAMETER, SIZE_PARAMETER, OFFSET_PARAMETER = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"
PARAMETERS = (REGION_PARAMETER, SIZE_PARAMETER, OFFSET_PARAMETER)
# A POSIX shared-memory name: one path component, optionally after a leading slash (shm_open's rule).
_KEY = re.compile(r"/?[^/\x00]{1,250}")
DISABLED = ("system shared memory is off on this server (VISIONZOO_SYSTEM_SHARED_MEMORY=on enables it, for trusted "
            "clients on the same host); send the tensor data in the request instead")


@dataclass(frozen=True)
class SharedMemoryRef:
    """Where a request puts one tensor: `byte_size` bytes at `offset` into the registered region `region`."""

    region: str
    byte_size: int
    offset: int = 0

    def parameters(self, byte_size: int | None = None) -> dict[str, Any]:
        """The tensor's parameters in an answer (`byte_size`: what was written, when it is less)."""
        return {REGION_PARAMETER: self.region, SIZE_PARAMETER: self.byte_size if byte_size is None else byte_size,
                OFFSET_PARAMETER: self.offset}


def reference(kind: str, name: str, parameters: Mapping[str, Any]) -> SharedMemoryRef | None:
    """A tensor's shared-memory parameters (plain values) -> where its data is, or None when it has
    none. `kind` is "input" or "output", for messages."""
    if REGION_PARAMETER not in parameters and SIZE_PARAMETER not in parameters:
        if OFFSET_PARAMETER in parameters:
            raise InvalidInput(f"{kind} {name!r}: {OFFSET_PARAMETER} without {REGION_PARAMETER} and {SIZE_PARAMETER}")
        return None
    if REGION_PARAMETER not in parameters or SIZE_PARAMETER not in parameters:
        raise InvalidInput(f"{kind} {name!r}: shared memory needs both {REGION_PARAMETER} and {SIZE_PARAMETER}")
    region = parameters[REGION_PARAMETER]
    if not isinstance(region, str) or not region:
        raise InvalidInput(f"{kind} {name!r}: {REGION_PARAMETER} must be a region's name, got {region!r}")
    size, offset = parameters[SIZE_PARAMETER], parameters.get(OFFSET_PARAMETER, 0)
    for label, value in ((SIZE_PARAMETER, size), (OFFSET_PARAMETER, offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{kind} {name!r}: {label} must be a non-negative integer, got {value!r}")
    return SharedMemoryRef(region, size, offset)


@dataclass(eq=False)
class Region:
    """One registered region: `byte_size` bytes at `offset` into the object `key`, open as `fd`."""

    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    lock: threading.Lock = field(default_factory=threading.Lock)  # a read or write never meets a close

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def _span(self, ref: SharedMemoryRef, size: int, what: str) -> int:
        if ref.offset + size > self.byte_size:
            raise InvalidInput(f"{what}: {size} bytes at offset {ref.offset} do not fit in shared-memory region "
                               f"{self.name!r} ({self.byte_size} bytes)")
        return self.offset + ref.offset

    def read(self, ref: SharedMemoryRef, what: str) -> bytes:
        start = self._span(ref, ref.byte_size, what)
        with self.lock:
            if self.fd < 0:
                raise InvalidInput(f"{what}: shared-memory region {self.name!r} was unregistered")
            data = os.pread(self.fd, ref.byte_size, start)
        if len(data) != ref.byte_size:
            raise InvalidInput(f"{what}: shared-memory region {self.name!r} ends before its {ref.byte_size} bytes "
                               f"(the object {self.key!r} was made smaller after it was registered)")
        return data

    def write(self, ref: SharedMemoryRef, data: bytes, what: str) -> None:
        if len(data) > ref.byte_size:
            raise InvalidInput(f"{what} is {len(data)} bytes; {SIZE_PARAMETER} gives it {ref.byte_size} in "
                               f"shared-memory region {self.name!r}")
        start = self._span(ref, len(data), what)
        with self.lock:
            if self.fd < 0:
                raise InvalidInput(f"{what}: shared-memory region {self.name!r} was unregistered")
            view = memoryview(data)
            while view:  # pwrite may write less than asked
                view = view[os.pwrite(self.fd, view, start + len(data) - len(view)):]

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _open(key: str) -> int:
    """The object `key` opened for reading and writing (shm_open's rules: /dev/shm on Linux), through
    CPython's own binding, the one multiprocessing.shared_memory uses."""
    from _posixshmem import shm_open

    return shm_open(key if key.startswith("/") else "/" + key, os.O_RDWR, 0o600)


class SharedMemoryRegions:
    """The registered regions of one server (both protocols: a region registered over REST serves gRPC)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def require_enabled(self) -> None:
        if not self.enabled:
            raise Forbidden(DISABLED)

    def status(self, name: str = "") -> list[dict[str, Any]]:
        if name:
            return [self.region(name).status()]
        with self._lock:
            return [region.status() for region in self._regions.values()]

    def region(self, name: str) -> Region:
        self.require_enabled()
        found = self._regions.get(name)
        if found is None:
            raise NotFound(f"no system shared-memory region {name!r} is registered")
        return found

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self.require_enabled()
        if not name:
            raise InvalidInput("a shared-memory region needs a name")
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key.strip("/") in (".", ".."):
            raise InvalidInput(f"key {key!r} is not a POSIX shared-memory name (one component, e.g. '/input_0', "
                               "as tritonclient.utils.shared_memory.create_shared_memory_region takes)")
        for label, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"region {name!r}: {label} must be a non-negative integer, got {value!r}")
        if byte_size == 0:
            raise InvalidInput(f"region {name!r}: byte_size must be at least 1")
        with self._lock:
            if name in self._regions:
                raise AlreadyExists(f"shared-memory region {name!r} is already registered; unregister it first")
            if len(self._regions) >= MAX_REGIONS:
                raise TooLarge(f"{MAX_REGIONS} shared-memory regions are registered, the most this server keeps; "
                               "unregister one first")
            try:
                fd = _open(key)
            except FileNotFoundError:
                raise InvalidInput(f"region {name!r}: no shared-memory object {key!r}; create it first "
                                   "(tritonclient.utils.shared_memory.create_shared_memory_region)") from None
            except OSError as error:
                raise InvalidInput(f"region {name!r}: the server cannot open shared-memory object {key!r} "
                                   f"({error.strerror})") from None
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise InvalidInput(f"region {name!r}: {key!r} is not a shared-memory object")
                if offset + byte_size > info.st_size:
                    raise InvalidInput(f"region {name!r}: offset {offset} + byte_size {byte_size} is past the end of "
                                       f"shared-memory object {key!r} ({info.st_size} bytes)")
            except BaseException:
                os.close(fd)
                raise
            self._regions[name] = Region(name, key, offset, byte_size, fd)

    def unregister(self, name: str = "") -> None:
        """Forget region `name` (every region when empty); a name that is not registered is no error."""
        self.require_enabled()
        with self._lock:
            gone = list(self._regions.values()) if not name else [r for r in [self._regions.get(name)] if r]
            for region in gone:
                del self._regions[region.name]
        for region in gone:
            region.close()

    def close(self) -> None:
        with self._lock:
            regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            region.close()


_registries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def regions_of(owner: object, enabled: bool) -> SharedMemoryRegions:
    """The one registry of `owner` (the served ModelSet), made on first use; its descriptors are
    closed when the owner goes."""
    found = _registries.get(owner)
    if found is None:
        found = _registries[owner] = SharedMemoryRegions(enabled)
        weakref.finalize(owner, found.close)
    return found
