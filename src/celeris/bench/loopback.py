"""Loopback-only targets: the load generator cannot be pointed at somebody else's server."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse

from celeris.errors import ConfigError

_LOOPBACK_HELP = "127.0.0.0/8, ::1 or localhost"


def check_loopback(url: str) -> tuple[str, int, str]:
    """Return ``(host, port, path)`` of an ``http://`` URL on a loopback address.

    ``localhost`` is resolved and every address it resolves to must be loopback; any other
    host name is refused without a lookup.

    Raises
    ------
    ConfigError
        The URL is not ``http://``, or its host is not loopback.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"the URL must be a non-empty string, got {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ConfigError(
            f"only http:// URLs on a loopback address are supported, got {url!r}"
            + (" (run against the server's local http port)" if parts.scheme == "https" else "")
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"the URL {url!r} has no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(f"the URL {url!r} has an invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if host.lower() == "localhost":
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"cannot resolve localhost: {exc}") from None
        addresses = {str(info[4][0]) for info in infos}
        if not addresses or not all(_is_loopback(a) for a in addresses):
            raise ConfigError(
                f"localhost resolves to {', '.join(sorted(addresses))}, not only loopback; "
                "use 127.0.0.1"
            )
        return host, port, path
    if not _is_loopback(host):
        raise ConfigError(
            f"refusing to send load to {host}: the load generator only targets loopback "
            f"addresses ({_LOOPBACK_HELP}) so it cannot be pointed at someone else's server"
        )
    return host, port, path


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
