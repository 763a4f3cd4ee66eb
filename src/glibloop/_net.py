"""Networking glue of the Loop: the cold orchestration around the C core.

Everything that runs per read, per write, per accept or per datagram is C
(``_core``: sockops.c, stream.c, server.c, udp.c).  What stays here runs
once per call or per connection:

* the coroutine wrappers of the ``sock_*`` operations (asyncio's API is
  coroutines, and ``create_task()`` accepts nothing else), each one line
  around a C method that returns a future;
* name resolution: numeric hosts are answered at once, names go to the
  executor;
* connection set-up, servers, TLS, datagram endpoints and sendfile: the
  coroutines of the running Python's own asyncio (``BaseEventLoop`` and the
  Unix selector loop) are borrowed as methods, so argument handling, error
  messages, happy eyeballs and version differences are asyncio's by
  construction.  They call back into the hooks below
  (``_make_socket_transport``, ``_start_serving``, ...), which make C
  transports and listeners.
"""

from __future__ import annotations

import logging
import os
import socket

from asyncio import base_events as _base_events
from asyncio import constants as _constants
from asyncio import exceptions as _exceptions
from asyncio import sslproto as _sslproto

from . import _core

try:
    from asyncio import unix_events as _unix_events
except ImportError:  # pragma: no cover - not on Linux
    _unix_events = None

_log = logging.getLogger("asyncio")


def _borrow(cls, name):
    """asyncio's own implementation of ``name`` (a plain function)."""
    return cls.__dict__[name]


_Base = _base_events.BaseEventLoop
_Unix = _unix_events._UnixSelectorEventLoop


class NetworkMixin:
    """The networking methods of glibloop.Loop (see the module docstring)."""

    __slots__ = ()

    @property
    def _debug(self):
        # asyncio's borrowed coroutines read the debug flag as an attribute.
        return self.get_debug()

    # -- sock_* ----------------------------------------------------------

    async def sock_recv(self, sock, n):
        """Receive up to n bytes from sock; return them."""
        return await self._sock_recv(sock, n)

    async def sock_recv_into(self, sock, buf):
        """Receive data from sock into buf; return the number of bytes."""
        return await self._sock_recv_into(sock, buf)

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to bufsize bytes; return (data, address)."""
        return await self._sock_recvfrom(sock, bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into buf; return (nbytes, address)."""
        if not nbytes:
            nbytes = len(buf)
        return await self._sock_recvfrom_into(sock, buf, nbytes)

    async def sock_sendall(self, sock, data):
        """Send all of data on sock."""
        return await self._sock_sendall(sock, data)

    async def sock_sendto(self, sock, data, address):
        """Send a datagram to address; return the number of bytes sent."""
        return await self._sock_sendto(sock, data, address)

    async def sock_accept(self, sock):
        """Accept a connection on a listening sock; return (conn, address)."""
        return await self._sock_accept(sock)

    async def sock_connect(self, sock, address):
        """Connect sock to address, resolving a host name first."""
        # asyncio refuses an unusable socket before it resolves anything.
        self._sock_check(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto, loop=self
            )
            address = resolved[0][4]
        return await self._sock_connect(sock, address)

    _ensure_resolved = _borrow(_Base, "_ensure_resolved")
    sock_sendfile = _borrow(_Base, "sock_sendfile")
    _sock_sendfile_fallback = _borrow(_Base, "_sock_sendfile_fallback")
    _check_sendfile_params = _borrow(_Base, "_check_sendfile_params")
    # os.sendfile() in chunks, waiting with add_writer: one call per chunk of
    # the file, not per write of the application.
    _sock_sendfile_native = _borrow(_Unix, "_sock_sendfile_native")
    _sock_sendfile_native_impl = _borrow(_Unix, "_sock_sendfile_native_impl")
    _sock_sendfile_update_filepos = _borrow(_Unix, "_sock_sendfile_update_filepos")
    _sock_add_cancellation_callback = _borrow(_Unix, "_sock_add_cancellation_callback")

    # -- connections -----------------------------------------------------

    # Happy eyeballs, local_addr, interleave, all_errors (3.12+), sock=,
    # ssl=: asyncio's coroutines, ending in _make_socket_transport (C).
    create_connection = _borrow(_Base, "create_connection")
    _connect_sock = _borrow(_Base, "_connect_sock")
    _create_connection_transport = _borrow(_Base, "_create_connection_transport")
    connect_accepted_socket = _borrow(_Base, "connect_accepted_socket")
    create_unix_connection = _borrow(_Unix, "create_unix_connection")

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        context=None,
    ):
        """TLS is asyncio's SSLProtocol (a BufferedProtocol) layered on the C
        stream transport; the application sees SSLProtocol's transport.  Its
        protocol is called from the C transport's calls, so in its context
        (``context``, which 3.15's asyncio passes, or a copy of the current
        one)."""
        kwargs = {}
        if ssl_handshake_timeout is not None:
            kwargs["ssl_handshake_timeout"] = ssl_handshake_timeout
        if ssl_shutdown_timeout is not None:
            kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        ssl_protocol = _sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname, **kwargs
        )
        self._make_socket_transport(
            rawsock, ssl_protocol, extra=extra, server=server, context=context
        )
        return ssl_protocol._app_transport

    # -- servers ---------------------------------------------------------

    # asyncio's coroutines and asyncio's own Server object; the Server calls
    # _start_serving/_stop_serving, which accept in C (server.c).
    create_server = _borrow(_Base, "create_server")
    _create_server_getaddrinfo = _borrow(_Base, "_create_server_getaddrinfo")
    create_unix_server = _borrow(_Unix, "create_unix_server")

    def _stop_serving_unlinking(self, sock):
        """Python 3.13+: a Unix server made with cleanup_socket=True recorded
        its socket file's inode in ``_unix_server_sockets``; when it stops,
        the file goes too, unless something else has taken the path since."""
        inode = self._unix_server_sockets.pop(sock, None)
        path = sock.getsockname() if inode is not None else None
        _core.Loop._stop_serving(self, sock)
        if not path:
            return
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.error("Unable to clean up listening UNIX socket %r: %r", path, exc)

    def _accept_ssl_connection(
        self,
        protocol,
        conn,
        extra,
        sslcontext,
        server,
        handshake_timeout,
        shutdown_timeout,
        context,
    ):
        """A TLS connection accepted by a C listener: SSLProtocol on a C
        transport, and a task that closes it if the handshake fails, both in
        the connection's context (as asyncio's accept task)."""
        waiter = self.create_future()
        transport = self._make_ssl_transport(
            conn,
            protocol,
            sslcontext,
            waiter=waiter,
            server_side=True,
            extra=extra,
            server=server,
            ssl_handshake_timeout=handshake_timeout,
            ssl_shutdown_timeout=shutdown_timeout,
            context=context,
        )
        self.create_task(
            self._await_accepted_handshake(transport, protocol, waiter), context=context
        )
        return transport

    async def _await_accepted_handshake(self, transport, protocol, waiter):
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            transport.close()
            if self.get_debug():
                self.call_exception_handler(
                    {
                        "message": "Error on transport creation for incoming connection",
                        "exception": exc,
                        "protocol": protocol,
                        "transport": transport,
                    }
                )

    # -- datagrams, TLS upgrade, sendfile --------------------------------

    # asyncio's coroutines; the transports they make are C (udp.c, stream.c).
    create_datagram_endpoint = _borrow(_Base, "create_datagram_endpoint")
    start_tls = _borrow(_Base, "start_tls")
    sendfile = _borrow(_Base, "sendfile")
    _sendfile_fallback = _borrow(_Base, "_sendfile_fallback")

    async def _sendfile_native(self, transp, file, offset, count):
        """loop.sendfile() on a C stream transport: wait until its buffer is
        empty, let sock_sendfile() (os.sendfile) have the socket, give the
        socket back."""
        if not isinstance(transp, _core.StreamTransport):
            raise _exceptions.SendfileNotAvailableError(
                f"transport {transp!r} is not a glibloop stream transport"
            )
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        transp._release_fd()
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            transp._reclaim_fd()
            if resume_reading:
                transp.resume_reading()

    # -- names -----------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """socket.getaddrinfo() for the loop: numeric hosts at once, names
        in the default executor (resolvers block)."""
        if host is None or _looks_numeric(host):
            try:
                return socket.getaddrinfo(
                    host, port, family, type, proto, flags | socket.AI_NUMERICHOST
                )
            except socket.gaierror:
                pass  # let the resolver give its own answer and error
        func = self._getaddrinfo_debug if self.get_debug() else socket.getaddrinfo
        return await self.run_in_executor(None, func, host, port, family, type, proto, flags)

    _getaddrinfo_debug = _borrow(_Base, "_getaddrinfo_debug")

    async def getnameinfo(self, sockaddr, flags=0):
        """socket.getnameinfo() for the loop: at once when no name has to be
        looked up (NI_NUMERICHOST), else in the default executor."""
        # Anything but an int is socket.getnameinfo's to refuse, in its words.
        if isinstance(flags, int) and flags & socket.NI_NUMERICHOST:
            return socket.getnameinfo(sockaddr, flags)
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)


def _looks_numeric(host):
    """True for IPv4/IPv6 literals (a cheap pre-check; getaddrinfo with
    AI_NUMERICHOST is the real test)."""
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str) or not host:
        return False
    if ":" in host:
        return True
    return host.replace(".", "").isdigit()


# Class attributes asyncio's borrowed coroutines look for on transports.
_core.StreamTransport._start_tls_compatible = True
_core.StreamTransport._sendfile_compatible = _constants._SendfileMode.TRY_NATIVE
