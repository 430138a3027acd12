"""Ports bound while ``twistd`` starts, handed to the reactor once it runs.

twistd builds the service tree (``makeService``) before it forks into the
background, and only then starts the services. A port that is taken would
fail after the fork, where twistd reports only ``Exception``s to the waiting
parent and prints nothing useful. Binding in ``makeService`` instead makes a
taken port fail in the foreground, with one clear line, before a pid file or
a data folder exists. The bound socket survives the fork; the reactor adopts
it when the service starts.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application import service
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory

BACKLOG = 50  # Twisted's listenTCP default


class CannotBind(Exception):
    """The port cannot be listened on; the message says which and why."""


def resolve_interface(host: str) -> tuple[int, tuple]:
    """``(family, sockaddr)`` to bind ``host`` on; ValueError naming the host."""
    try:
        infos = socket.getaddrinfo(
            host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise ValueError(
            f"{host!r} is not an interface of this machine: {reason}"
        ) from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or CannotBind."""
    try:
        family, sockaddr = resolve_interface(host)
    except ValueError as e:
        raise CannotBind(f"cannot listen on {host}:{port}: {e}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As Twisted's own listenTCP: a restart may rebind at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((sockaddr[0], port, *sockaddr[2:]))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise CannotBind(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


class BoundPort(service.Service):
    """Serves ``factory`` on a socket bound earlier; closes it when stopped."""

    def __init__(self, sock: socket.socket, factory: Factory, reactor: Any) -> None:
        self.socket = sock
        self.factory = factory
        self._reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        self.port = self._reactor.adoptStreamPort(
            self.socket.fileno(), self.socket.family, self.factory
        )
        self.socket.close()  # the reactor listens on its own duplicate now

    def stopService(self):
        super().stopService()
        self.socket.close()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
