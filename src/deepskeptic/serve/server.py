"""`deepskeptic serve`: the app on uvicorn, bound to 127.0.0.1 unless told otherwise."""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

from deepskeptic.errors import UserError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP. Without it
    # Nagle's algorithm holds each response's body until the client's delayed ACK of its headers:
    # ~40 ms added to every request but a connection's first (measured: 52 ms -> 9 ms at 1 client).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # inherited by accepted connections
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def serve(paths: list[str], host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_batch: int = 32, max_delay_ms: float = 5.0, watch: str | None = None) -> int:
    """Load the runs, then serve until Ctrl-C. ``token`` defaults to $DEEPSKEPTIC_TOKEN."""
    import uvicorn

    from deepskeptic.serve.app import ServeOptions, create_app
    token = token if token is not None else os.environ.get("DEEPSKEPTIC_TOKEN") or None
    if not paths and not watch:
        raise UserError("name at least one run or comparison folder to serve (or --watch FOLDER)")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    if max_batch < 1 or max_delay_ms < 0:
        raise UserError("--max-batch must be at least 1 and --max-delay-ms not negative")
    if watch and not Path(watch).is_dir():
        raise UserError(f"--watch {watch} is not a folder: give the folder runs are written to (e.g. runs/)")
    if token is not None and len(token) < 8:
        raise UserError("the token must have at least 8 characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
    app = create_app(paths, ServeOptions(token=token, max_batch=max_batch, max_delay_ms=max_delay_ms, watch=watch))
    sock = _bind(host, port)
    if not is_loopback(host) and token is None:
        print(f"warning: serving on {host}, reachable from other machines, without a token: anyone who can "
              f"reach it can use the models; pass --token or set DEEPSKEPTIC_TOKEN", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {len(app.state.models)} run(s) at http://{shown}:{sock.getsockname()[1]}/ "
          f"({'token required' if token else 'no token'}; Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
