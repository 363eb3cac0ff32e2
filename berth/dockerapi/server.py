"""The Docker Engine API's HTTP/1.1 server on a unix socket.

h11 parses and frames HTTP and never touches the socket, so this module owns every
byte read and written: the bounds below are enforced where the bytes are, and a
handler that must take the connection over after the response head (attach and
exec hijack it: ``Upgrade: tcp``) can simply be handed the socket. docs/docker-api.md
says why h11 rather than http.server, aiohttp or a WSGI stack.

Bounds (a local client, even root's, may be buggy or hostile; the server must stay
small whatever it sends):

* at most ``MAX_CONNECTIONS`` connections at once, one thread each; the next one is
  answered ``503`` and closed at once (it never gets a thread);
* a request head of at most ``MAX_HEAD`` bytes, a body of at most ``MAX_BODY``
  (a larger Content-Length is refused before a byte of the body is read);
* a request must arrive whole within ``REQUEST_TIMEOUT`` seconds of its first byte,
  and a kept-alive connection that sends nothing for ``IDLE_TIMEOUT`` is closed;
* a response is written with ``WRITE_TIMEOUT`` per send: a client that stops
  reading a follow stream is dropped, and a stream is produced piece by piece, so
  an unread one holds at most one piece in the server.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import h11

log = logging.getLogger("berth.docker-api")

MAX_CONNECTIONS: Final = 128
MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 1024 * 1024
REQUEST_TIMEOUT: Final = 30.0
IDLE_TIMEOUT: Final = 120.0
WRITE_TIMEOUT: Final = 30.0
READ_SIZE: Final = 64 * 1024
MAX_USER_AGENT: Final = 96
_CRED: Final = struct.Struct("3i")


class HttpError(Exception):
    """An answer in Docker's error shape: ``{"message": ...}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is on the other end: the kernel's word (SO_PEERCRED) and the program's
    own (User-Agent, sanitised)."""

    uid: int
    pid: int
    agent: str

    @property
    def actor(self) -> str:
        """The actor the broker records for this caller's commands (it appends
        ``via`` and the identity it authenticated: bus.admission)."""
        agent = f" {self.agent}" if self.agent else ""
        return f"docker-api uid={self.uid} pid={self.pid}{agent}"


def clean_agent(raw: bytes) -> str:
    """A User-Agent fit for the audit log: printable ASCII, no spaces, bounded."""
    text = raw.decode("ascii", "replace")
    kept = "".join(ch if 0x21 <= ord(ch) < 0x7F else "_" for ch in text.split(" ")[0])
    return kept[:MAX_USER_AGENT]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    caller: Caller
    version: str = ""
    """The ``/v1.NN`` prefix the client used ("" for none)."""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean query parameter as Docker reads one (1/true/True, 0/false)."""
        value = self.arg(name)
        if value is None or value == "":
            return default
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise HttpError(400, f"invalid value for {name}: {value!r} is not a boolean")

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise HttpError(400, f"invalid value for {name}: {value!r} is not an integer") \
                from None

    def json(self) -> Any:
        """The body as JSON: NaN, Infinity and NUL anywhere are refused, as is a
        nesting too deep to parse (all one sentence, status 400)."""
        if not self.body:
            return None
        if b"\x00" in self.body:
            raise HttpError(400, "invalid JSON body: it contains a NUL byte")

        def no_constant(name: str) -> Any:
            raise ValueError(f"{name} is not a JSON number")

        try:
            return json.loads(self.body, parse_constant=no_constant)
        except RecursionError:
            raise HttpError(400, "invalid JSON body: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, f"invalid JSON body: {e}") from None


Hijack = Callable[[socket.socket, bytes], None]
"""Takes the connection over after the response head: the socket and any bytes the
client sent after its request."""


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    chunks: Iterable[bytes] | None = None
    """A streamed body (chunked), produced piece by piece while it is sent."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    hijack: Hijack | None = None

    @staticmethod
    def of_json(value: Any, status: int = 200) -> Response:
        return Response(status, json.dumps(value).encode())

    @staticmethod
    def empty(status: int = 204) -> Response:
        return Response(status, b"", content_type="")


def error_response(status: int, message: str) -> Response:
    return Response.of_json({"message": message}, status)


Handler = Callable[[Request], Response]


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(uid, pid) of the process that connected, from the kernel."""
    pid, uid, _gid = _CRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return uid, pid


class Connection:
    """One client connection, kept alive across requests, on its own thread."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.uid, self.pid = peer_credentials(sock)

    def serve(self) -> None:
        try:
            while True:
                request = self._read_request()
                if request is None:
                    return
                log.debug("pid %d: %s %s", self.pid, request.method, request.path)
                response = self._answer(request)
                log.debug("pid %d: %s %s -> %d", self.pid, request.method, request.path,
                          response.status)
                if request.method == "HEAD":
                    response.chunks, response.body = None, b""
                if not self._send(response):
                    return
                if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
                    return
                self.h11.start_next_cycle()
        except (OSError, h11.LocalProtocolError) as e:
            log.debug("connection ended: %s", e)
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def _answer(self, request: Request) -> Response:
        try:
            return self.handler(request)
        except HttpError as e:
            return error_response(e.status, e.message)
        except Exception:  # berth's own fault: said so, logged, the connection lives on
            log.exception("the Docker API handler of %s %s failed", request.method,
                          request.path)
            return error_response(500, "internal error in berth's Docker API server; "
                                       "see berth's log")

    # -- reading

    def _recv(self, deadline: float | None) -> bytes:
        timeout = IDLE_TIMEOUT if deadline is None else deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError
        self.sock.settimeout(timeout)
        return self.sock.recv(READ_SIZE)

    def _next(self, deadline: float | None) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(self._recv(deadline))

    def _read_request(self) -> Request | None:
        try:
            event = self._next_first()
            if event is None:
                return None
            deadline = time.monotonic() + REQUEST_TIMEOUT
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request)
            # h11 bounds a head that is still incomplete; one that arrived whole in a
            # few reads is measured here
            if len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers) \
                    > MAX_HEAD:
                self._refuse(431, f"malformed HTTP request: the head is larger than "
                                  f"{MAX_HEAD} bytes")
                return None
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in event.headers}
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
                self._refuse(413, f"request body too large: at most {MAX_BODY} bytes")
                return None
            body = bytearray()
            while True:
                part = self._next(deadline)
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > MAX_BODY:
                        self._refuse(413, f"request body too large: at most {MAX_BODY} bytes")
                        return None
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return None
            return self._request(event, headers, bytes(body))
        except h11.RemoteProtocolError as e:
            status = 431 if "exceeded" in str(e) or "too long" in str(e) else 400
            self._refuse(status, f"malformed HTTP request: {e}")
            return None
        except TimeoutError:
            return None

    def _next_first(self) -> Any:
        """The first event of a request: idle until a byte arrives, then the head
        must arrive within REQUEST_TIMEOUT."""
        event = self.h11.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = self._recv(None)
        self.h11.receive_data(data)
        if not data:
            return None
        return self._next(time.monotonic() + REQUEST_TIMEOUT)

    def _request(self, event: h11.Request, headers: dict[str, str], body: bytes) -> Request:
        target = event.target.decode("latin-1")
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        caller = Caller(self.uid, self.pid,
                        clean_agent(headers.get("user-agent", "").encode("latin-1")))
        return Request(event.method.decode("ascii", "replace"), path, query, headers, body,
                       caller)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that cannot be read, then close (the connection's
        framing can no longer be trusted)."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"message": message}).encode()
        try:
            self.sock.settimeout(WRITE_TIMEOUT)
            self._write(h11.Response(status_code=status, headers=[
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Connection", "close")]))
            self._write(h11.Data(data=body))
            self._write(h11.EndOfMessage())
        except (OSError, h11.LocalProtocolError):
            pass

    # -- writing

    def _write(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.sock.sendall(data)

    def _send(self, response: Response) -> bool:
        """Send the response; False when the connection must end (hijacked, or the
        client is gone)."""
        self.sock.settimeout(WRITE_TIMEOUT)
        headers = [("Api-Version", API_VERSION), ("Ostype", "linux"),
                   ("Server", "berth"), ("Docker-Experimental", "false"),
                   *response.headers]
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        if response.hijack is not None:
            # h11 has no "take over" event: the head is written by hand and h11 is
            # left behind, as the connection is no longer HTTP.
            head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'OK')}"]
            head += [f"{k}: {v}" for k, v in headers]
            self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            leftover = bytes(self.h11.trailing_data[0])
            response.hijack(self.sock, leftover)
            return False
        if response.chunks is None:
            if response.status not in (204, 304):
                headers.append(("Content-Length", str(len(response.body))))
            self._write(h11.Response(status_code=response.status, headers=headers))
            if response.body and response.status not in (204, 304):
                self._write(h11.Data(data=response.body))
            self._write(h11.EndOfMessage())
            return True
        self._write(h11.Response(status_code=response.status, headers=headers))
        chunks = iter(response.chunks)
        try:
            for chunk in chunks:
                if chunk:
                    self._write(h11.Data(data=chunk))
        except OSError:
            raise  # the client is gone: the connection ends
        except Exception as e:  # noqa: BLE001 - the head is out: only ending is left
            # A stream's producer failed after the status went out (the engine
            # stopping under a wait, say): Docker's clients see the body end early.
            log.warning("%s %s: the streamed answer ended early: %s", response.status,
                        response.content_type, e)
            return False
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self._write(h11.EndOfMessage())
        return True


API_VERSION: Final = "1.41"
MIN_API_VERSION: Final = "1.24"
_REASONS: Final = {101: "UPGRADED", 200: "OK"}


class Server:
    """Accepts on a unix socket; one thread per connection, at most MAX_CONNECTIONS."""

    def __init__(self, path: str, handler: Handler, *,
                 max_connections: int = MAX_CONNECTIONS,
                 on_close: Callable[[], None] | None = None) -> None:
        """``on_close`` runs on a connection's thread when it ends (the handler keeps
        per-thread bus clients: this closes them)."""
        self.path = path
        self.handler = handler
        self.on_close = on_close
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self.sock = _listen(path)

    def serve_forever(self, parent: int | None = None) -> None:
        """Accept until stopped; ``parent``: also stop once that process is no longer
        this one's parent (``berth up`` killed -9 must not leave a server behind)."""
        try:
            self.sock.settimeout(0.5)
        except OSError:
            if self._stopping.is_set():  # stopped before it began
                return
            raise
        while not self._stopping.is_set():
            if parent is not None and os.getppid() != parent:
                log.warning("berth up (pid %d) is gone; the Docker API server stops", parent)
                self.stop()
                return
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if self._stopping.is_set():
                    return
                log.warning("accept failed: %s", e)
                time.sleep(0.1)
                continue
            if not self._slots.acquire(blocking=False):
                _turn_away(conn)
                continue
            threading.Thread(target=self._run, args=(conn,), daemon=True,
                             name="docker-api").start()

    def _run(self, conn: socket.socket) -> None:
        try:
            Connection(conn, self.handler).serve()
        finally:
            try:
                if self.on_close is not None:
                    self.on_close()
            finally:
                self._slots.release()

    def request_stop(self) -> None:
        """Ask the accept loop to end (safe in a signal handler: sets a flag only)."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop accepting and remove the socket file (again: nothing happens)."""
        self._stopping.set()
        if self.sock.fileno() == -1:
            return
        try:
            self.sock.close()
        finally:
            try:
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass


def _turn_away(conn: socket.socket) -> None:
    """Over the connection cap: one short 503 in Docker's shape, then close."""
    body = json.dumps({"message": f"too many connections to berth's Docker API "
                                  f"(at most {MAX_CONNECTIONS}); try again"}).encode()
    try:
        conn.settimeout(1.0)
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                     b"\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
    except OSError:
        pass
    finally:
        conn.close()


def _listen(path: str) -> socket.socket:
    """A 0600 socket at ``path``. An old socket file there is replaced only when
    nothing answers on it (another server's would be stolen otherwise), and only a
    socket: any other file is left alone and refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            raise OSError(f"another server already listens on {path}")
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def frames(chunks: Iterable[tuple[int, bytes]]) -> Iterator[bytes]:
    """Docker's multiplexed stream: each piece behind an 8-byte header (stream 1
    stdout, 2 stderr; three zero bytes; the big-endian length)."""
    for stream, data in chunks:
        if data:
            yield struct.pack(">BxxxL", stream, len(data)) + data
