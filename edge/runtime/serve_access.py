"""Who may watch the live view, and where it listens: ``parse_serve`` (``--serve [HOST]:PORT``, IPv6
literals in brackets), ``is_loopback``, ``Credentials`` and ``load_credentials`` (``--serve-auth FILE``),
``check_access`` and ``serve_access`` (the three ``--serve*`` flags checked together).

Beyond loopback the live view needs a password (``--serve-auth FILE``, one line ``user:password``) or an
explicit ``--serve-public``; with neither, ``check_access`` refuses. ``edge.runtime.serve.MjpegServer``
checks the password; nothing here ever logs or prints it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Set, Tuple, Union

from edge.errors import EdgeError

log = logging.getLogger(__name__)


def parse_serve(text: str) -> Tuple[str, int]:
    """'[HOST]:PORT' -> (host, port); host defaults to 127.0.0.1 (loopback). Port 0: any free port.
    IPv6 literals go in brackets: ``[::1]:8080``, ``[::]:8080`` (returned without them)."""
    t = str(text).strip()
    if re.fullmatch(r"\d+", t):
        host, port_text = "127.0.0.1", t
    elif t.startswith("["):
        m = re.fullmatch(r"\[([^\[\]]+)\]:(\d+)", t)
        if not m or not _is_ipv6(m.group(1)):
            raise EdgeError(f"--serve {text!r}: expected [IPV6]:PORT such as [::1]:8080 or [::]:8080")
        host, port_text = m.group(1), m.group(2)
    else:
        m = re.fullmatch(r"([^\[\]:\s]*):(\d+)", t)
        if not m:
            if t.count(":") >= 2:
                raise EdgeError(f"--serve {text!r}: write an IPv6 address in brackets, such as [::1]:8080")
            raise EdgeError(f"--serve {text!r}: expected [HOST]:PORT such as :8080 or 0.0.0.0:8080")
        host, port_text = (m.group(1) or "127.0.0.1"), m.group(2)
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise EdgeError(f"--serve port {port} is outside 0..65535")
    return host, port


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])  # a zone id (fe80::1%eth0) is allowed
        return True
    except ValueError:
        return False


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for loopback addresses (127.0.0.0/8, ::1, 'localhost'); False for anything else, host names
    included (they may resolve to any interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials for the live view. ``repr``/``str`` never show the password."""

    user: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.user}:***"

    def digest(self) -> bytes:
        """SHA-256 of ``user:password`` (what a Basic header carries): compared in constant time."""
        return hashlib.sha256(f"{self.user}:{self.password}".encode()).digest()


_WARNED_LOOSE: Set[str] = set()


def load_credentials(path: Union[str, Path]) -> Credentials:
    """Read ``--serve-auth FILE``: one line ``user:password`` (the password may hold ':'). Errors name the
    file and what is wrong, never its content. A file other users can read is warned about."""
    p = Path(path)
    what = f"--serve-auth {p}"
    how = "put one line user:password in it (a password of your choosing) and chmod 600 it"
    if not p.exists():
        raise EdgeError(f"{what}: file not found; create it: {how}")
    if not p.is_file():
        raise EdgeError(f"{what}: not a regular file; {how}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeError(f"{what}: cannot read it ({getattr(exc, 'strerror', None) or type(exc).__name__}); "
                        f"{how}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise EdgeError(f"{what}: expected one line user:password, found {len(lines)} non-empty lines; {how}")
    user, colon, password = lines[0].strip("\r\n").partition(":")
    if not colon:
        raise EdgeError(f"{what}: expected user:password, found no ':'; {how}")
    if not user.strip():
        raise EdgeError(f"{what}: the user name before ':' is empty; {how}")
    if not password:
        raise EdgeError(f"{what}: the password after ':' is empty; {how}")
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and str(p.resolve()) not in _WARNED_LOOSE:
        _WARNED_LOOSE.add(str(p.resolve()))
        log.warning("%s can be read by other users (mode %o); chmod 600 it", what, stat.S_IMODE(mode))
    return Credentials(user, password)


def check_access(host: str, port: int, credentials: Optional[Credentials], public: bool) -> None:
    """Refuse a non-loopback bind that has neither credentials nor an explicit ``public``."""
    if is_loopback(host) or credentials is not None or public:
        return
    reach = "any network this machine is on" if host in ("0.0.0.0", "::") else host
    raise EdgeError(
        f"--serve {host_port(host, port)} would show the camera to anyone who can reach {reach}; "
        "put the live view behind a password with --serve-auth FILE (one line user:password, chmod 600), "
        f"or pass --serve-public to serve it without one, or keep it on loopback (--serve :{port}) and "
        f"watch through an SSH tunnel (ssh -L {port or 8080}:127.0.0.1:{port or 8080} DEVICE)"
    )


def serve_access(serve: Optional[str], auth_file: Optional[str] = None,
                 public: bool = False) -> Tuple[str, int, Optional[Credentials]]:
    """``--serve``, ``--serve-auth`` and ``--serve-public`` checked together: (host, port, credentials)."""
    if not serve:
        raise EdgeError("--serve-auth and --serve-public need --serve [HOST]:PORT (they guard the live view)")
    if auth_file and public:
        raise EdgeError("--serve-auth and --serve-public: choose one, not both (--serve-auth FILE asks for a "
                        "password; --serve-public serves to anyone who can reach the address)")
    host, port = parse_serve(serve)
    credentials = load_credentials(auth_file) if auth_file else None
    check_access(host, port, credentials, public)
    return host, port, credentials
