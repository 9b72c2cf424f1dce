"""Which Host headers the server answers: its own addresses, and the names it was given.

    check = HostCheck(app, hosts=allowed_hosts("127.0.0.1", "127.0.0.1", ["lab.example.org"]))

A page on another site can point its own name at 127.0.0.1 (DNS rebinding) and then talk
to a local server as if it were its own origin: the browser's same-origin rule is about
names, and CORS never comes into it. The Host header gives it away: it carries the
page's name. So a request is answered only when its Host (port aside) is

- an address the server listens on (any address, when it listens on all of them:
  0.0.0.0 or ::), or one of the names given with --allowed-host (".example.org" allows its
  subdomains too);
- a loopback name such as localhost, when the server listens on loopback or on all;

and refused otherwise with 403 and one line saying which flag allows it, as Jupyter does.
Behind a reverse proxy, give the proxy's public name with --allowed-host.
"""

from __future__ import annotations

import ipaddress

from .limits import LOOPBACK_NAMES, is_loopback


class Hosts:
    def __init__(self, addresses: set[str], names: set[str], any_address: bool, loopback: bool):
        self.addresses, self.names = addresses, names
        self.any_address, self.loopback = any_address, loopback

    def allows(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            address = None
        if address is not None:
            return self.any_address or str(address) in self.addresses
        if host in self.names or any(n.startswith(".") and (host.endswith(n) or host == n[1:])
                                     for n in self.names):
            return True
        return self.loopback and host in LOOPBACK_NAMES


def allowed_hosts(host: str, bound: str, names=()) -> Hosts:
    """`host`: the --host given; `bound`: the address its socket is bound to."""
    wildcard = ipaddress.ip_address(bound).is_unspecified
    addresses = {bound}
    if not _is_address(host):
        names = (*names, host)  # --host myname.local: that name is the server's
    return Hosts(addresses, {n.lower().rstrip(".") for n in names}, any_address=wildcard,
                 loopback=wildcard or is_loopback(bound))


def split_host(value: str) -> str:
    """The host of a Host header, without its port: 'h:80' -> 'h', '[::1]:80' -> '[::1]'."""
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: 403 for a Host that is not one of the server's (see above)."""

    def __init__(self, app, hosts: Hosts, refuse):
        self.app, self.hosts, self.refuse = app, hosts, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(b"host")
            # HTTP/1.0 without a Host: no browser sends that, so no rebinding page either
            host = split_host(raw.decode("latin-1")) if raw is not None else None
            if host is not None and not self.hosts.allows(host):
                shown = host if len(host) <= 80 else host[:80] + "..."
                response = self.refuse(403, f"Host {shown!r} is not this server's name or "
                                            f"address; to answer it, start the server with "
                                            f"--allowed-host {shown}")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
