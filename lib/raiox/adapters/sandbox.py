"""Decoding untrusted films in child processes with a memory and a time limit, so that a film that makes a decoder
explode (a decompression bomb, a decoder's bug) ends that child only, with a reason that names the limit; the
process that asked (a web function, the fetch step) keeps serving. A few children are kept warm and reused.

The header checks of `raiox.adapters.imaging` refuse what a film declares; the child bounds what it does. A child
is a fresh interpreter (`python -m raiox.adapters.sandbox`), never a fork of a process holding threads, a database
pool or a model. It loads the decoders, caps its own address space (RLIMIT_AS: what it already maps plus
RAIOX_DECODE_MEMORY_MB), says it is ready, then answers one film at a time on stdin/stdout — no pickle in either
direction (a child that read hostile bytes is not trusted to hand the parent objects):

    request   >II (header length, data length), JSON {"max_pixels", "max_decoded_bytes", "max_file_bytes"}, data
    answer    >II (header length, data length), JSON {"ok": true, "kind", "width", …} and the bytes to keep,
              or JSON {"ok": false, "error": <an imaging error class>, "message", "fatal"} and nothing
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from raiox.adapters.imaging import (
    KINDS,
    MIB,
    DecodeLimits,
    DecodingOutOfMemory,
    Examined,
    ImageError,
    ImageInfo,
    ImageTooLarge,
    UnsupportedImage,
    examine,
)
from raiox.settings import Settings

log = logging.getLogger(__name__)

_FRAME = struct.Struct(">II")
_ERRORS: dict[str, type[ImageError]] = {cls.__name__: cls for cls in (ImageError, ImageTooLarge, UnsupportedImage)}
_MAX_HEADER = 64 * 1024
_READY = b"R"
_FILMS_PER_CHILD = 200  # a fresh child now and then: whatever the decoders leave behind does not pile up
_START_SECONDS = 60.0  # a cold interpreter loading numpy, Pillow and pydicom on a busy machine


def decode_limits(settings: Settings) -> DecodeLimits:
    """The header limits a film is held to (RAIOX_MAX_IMAGE_PIXELS, RAIOX_MAX_DECODED_MB, FETCH_MAX_BYTES)."""
    return DecodeLimits(max_pixels=settings.raiox_max_image_pixels,
                        max_decoded_bytes=settings.raiox_max_decoded_mb * MIB,
                        max_file_bytes=settings.fetch_max_bytes)


@dataclass(frozen=True)
class SandboxLimits:
    """What one decoding may use, and how many run at once."""

    memory_bytes: int = 768 * MIB
    seconds: float = 30.0
    processes: int = 2


class _ChildGone(Exception):
    """The child stopped answering: it exited, was killed, or closed its pipe."""


class _Child:
    """One decoding process and its pipes."""

    def __init__(self, memory_bytes: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "raiox.adapters.sandbox", str(memory_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        self.films = 0
        try:
            if self._read(1, time.monotonic() + _START_SECONDS) != _READY:
                raise _ChildGone("it did not say it was ready")
        except (_ChildGone, TimeoutError) as exc:
            self.stop()
            raise OSError(f"a decoding process could not be started ({exc})") from None

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        left = size
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                raise _ChildGone("its pipe closed")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def ask(self, data: bytes, limits: DecodeLimits, seconds: float) -> tuple[dict[str, Any], bytes]:
        """Send one film; its answer header and kept bytes. TimeoutError past `seconds`; _ChildGone if it died."""
        header = json.dumps({"max_pixels": limits.max_pixels, "max_decoded_bytes": limits.max_decoded_bytes,
                             "max_file_bytes": limits.max_file_bytes}).encode()
        assert self.process.stdin is not None
        self.films += 1
        deadline = time.monotonic() + seconds
        try:
            self.process.stdin.write(_FRAME.pack(len(header), len(data)) + header)
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _ChildGone("its pipe closed") from None
        header_size, data_size = _FRAME.unpack(self._read(_FRAME.size, deadline))
        if header_size > _MAX_HEADER or data_size > limits.max_decoded_bytes + limits.max_file_bytes:
            raise _ChildGone("it answered out of protocol")
        answer = json.loads(self._read(header_size, deadline))
        if not isinstance(answer, dict):
            raise _ChildGone("it answered out of protocol")
        return answer, self._read(data_size, deadline)

    def stop(self) -> int | None:
        """Kill the child (if it still runs) and reap it; its exit status (negative: the signal that ended it)."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None
        finally:
            for pipe in (self.process.stdin, self.process.stdout):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass


def _ended_by(status: int | None) -> str:
    if status is not None and status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


class DecoderPool:
    """`examine` a film in a warm child process under the limits; at most `processes` at once."""

    def __init__(self, limits: SandboxLimits | None = None, *, isolate: bool = True) -> None:
        self.limits = limits or SandboxLimits()
        self.isolate = isolate
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.limits.processes)
        self._cannot_start: str | None = None
        self.started = 0  # children started so far (a bench and tests read it)
        _POOLS.add(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> DecoderPool:
        return cls(SandboxLimits(memory_bytes=settings.raiox_decode_memory_mb * MIB,
                                 seconds=settings.raiox_decode_seconds, processes=settings.raiox_decode_processes),
                   isolate=settings.raiox_decode_isolation)

    def examine(self, data: bytes, limits: DecodeLimits) -> Examined:
        """`imaging.examine` in a child: the same answer or ImageError, and ImageTooLarge naming the memory or
        time limit when the child ran out of either. Where no child can be started (a platform without
        subprocesses), the film is decoded here, under the header limits alone, and that is logged once."""
        if not self.isolate or self._cannot_start:
            return examine(data, limits)
        with self._slots:
            try:
                child = self._take()
            except OSError as exc:
                self._cannot_start = str(exc)
                log.error("%s; films are decoded in this process, under the header limits only", exc)
                return examine(data, limits)
            return self._ask(child, data, limits)

    def _take(self) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.process.poll() is None:
                    return child
                child.stop()
        self.started += 1
        return _Child(self.limits.memory_bytes)

    def _give_back(self, child: _Child) -> None:
        if child.films >= _FILMS_PER_CHILD or child.process.poll() is not None:
            child.stop()
            return
        with self._lock:
            self._idle.append(child)

    def _ask(self, child: _Child, data: bytes, limits: DecodeLimits) -> Examined:
        memory = f"{self.limits.memory_bytes / MIB:.0f} MiB"
        try:
            answer, kept = child.ask(data, limits, self.limits.seconds)
        except TimeoutError:
            child.stop()
            raise ImageTooLarge(f"decoding the image took longer than {self.limits.seconds:g} s, the limit for one "
                                "film (RAIOX_DECODE_SECONDS)") from None
        except (_ChildGone, ValueError) as exc:  # ValueError: a header that is not JSON
            status = child.stop()
            log.warning("decoding process %d stopped (%s: %s)", child.pid, _ended_by(status), exc)
            raise ImageTooLarge(f"decoding the image stopped the decoder ({_ended_by(status)}); it needs more than "
                                f"{memory} of memory, the limit for one film (RAIOX_DECODE_MEMORY_MB), or the file "
                                "is malformed") from None
        if answer.get("fatal"):
            child.stop()
        else:
            self._give_back(child)
        if answer.get("ok"):
            kind, kept_kind = KINDS.get(str(answer.get("kind"))), KINDS.get(str(answer.get("kept_kind")))
            if kind is None or kept_kind is None:
                raise ImageError("the decoder answered out of protocol")
            spacing = answer.get("spacing")
            info = ImageInfo(kind, int(answer["width"]), int(answer["height"]), str(answer["mode"]),
                             (float(spacing[0]), float(spacing[1])) if spacing else None)
            return Examined(info, kept, kept_kind)
        if answer.get("error") == "memory":
            raise ImageTooLarge(f"decoding the image needs more than {memory} of memory, the limit for one film "
                                "(RAIOX_DECODE_MEMORY_MB)")
        error = _ERRORS.get(str(answer.get("error")), ImageError)
        raise error(str(answer.get("message") or "cannot decode the image")[:1000])

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()


_POOLS: weakref.WeakSet[DecoderPool] = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
    for pool in list(_POOLS):
        pool.close()


# The child --------------------------------------------------------------------------------------------


def _address_space() -> int | None:
    """Bytes this process maps now (VmSize), or None where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _limit_memory(budget: int) -> None:
    """Cap the address space at what is mapped now (interpreter, decoders) plus `budget`."""
    import resource

    mapped = _address_space()
    if mapped is None:
        return
    resource.setrlimit(resource.RLIMIT_AS, (mapped + budget, mapped + budget))


class _MemoryWatch(logging.Handler):
    """pydicom logs each decoder's failure and raises a RuntimeError with the messages (a MemoryError's is
    empty); this notices the MemoryError among them."""

    ran_out = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], MemoryError):
            _MemoryWatch.ran_out = True


def _answer(data: bytes, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    _MemoryWatch.ran_out = False
    try:
        limits = DecodeLimits(int(request["max_pixels"]), int(request["max_decoded_bytes"]),
                              int(request["max_file_bytes"]))
        result = examine(data, limits)
    except (MemoryError, DecodingOutOfMemory):
        return {"ok": False, "error": "memory", "fatal": True}, b""
    except ImageError as exc:
        if _MemoryWatch.ran_out:
            return {"ok": False, "error": "memory", "fatal": True}, b""
        name = type(exc).__name__ if type(exc).__name__ in _ERRORS else "ImageError"
        return {"ok": False, "error": name, "message": str(exc)}, b""
    except Exception as exc:  # noqa: BLE001 - a decoder's surprise is this film's failure, not the child's end
        return {"ok": False, "error": "ImageError", "message": f"cannot decode the image ({type(exc).__name__})",
                "fatal": True}, b""
    info = result.info
    return {"ok": True, "kind": info.kind.format, "width": info.width, "height": info.height, "mode": info.mode,
            "spacing": list(info.pixel_spacing_mm) if info.pixel_spacing_mm else None,
            "kept_kind": result.kept_kind.format}, result.kept


def _read_exactly(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(memory_budget: int) -> None:
    """The child's loop: films in on stdin, answers out on the original stdout (anything a library prints goes
    to stderr instead, so it cannot corrupt an answer)."""
    import pydicom.pixels  # noqa: F401 - loaded before the limit, like every decoder
    from PIL import JpegImagePlugin, PngImagePlugin, TiffImagePlugin  # noqa: F401

    pydicom_log = logging.getLogger("pydicom")
    pydicom_log.addHandler(_MemoryWatch())
    pydicom_log.propagate = False
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    _limit_memory(memory_budget)
    answers.write(_READY)
    answers.flush()
    while True:
        frame = _read_exactly(requests, _FRAME.size)
        if frame is None:
            return  # the parent closed the pipe (or died): nothing left to do
        header_size, data_size = _FRAME.unpack(frame)
        header = _read_exactly(requests, header_size)
        data = _read_exactly(requests, data_size)
        if header is None or data is None:
            return
        answer, kept = _answer(data, json.loads(header))
        del data
        encoded = json.dumps(answer).encode()
        answers.write(_FRAME.pack(len(encoded), len(kept)) + encoded)
        answers.write(kept)
        answers.flush()
        if answer.get("fatal"):
            return  # after a memory failure the heap may be in a poor state: a fresh child takes over


if __name__ == "__main__":
    serve(int(sys.argv[1]))
