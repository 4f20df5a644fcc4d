"""How clients reach a server: its URLs, the shared ``--server``/``--token`` flags, tokens.

:func:`endpoints` turns whatever the user typed (``http://host:port``, ``ws://…/v1/ws``)
into the HTTP base and the WebSocket URL; :func:`servers` does it for a list of nodes
(``--server`` repeated or comma-separated), which clients that fail over take.

Clients never hold the server's secret and may not import its auth code, so
:func:`claims` only *reads* a token's payload (the user and device kind it names; the
server is the one that verifies it), and :func:`mint` runs ``companion token`` in a child
process: on the server's own machine, with the same ``COMPANION_*`` settings, that signs
with the server's secret. It is what ``companion demo`` does when it was given no token.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

MINT_TIMEOUT_S = 30.0
DEFAULT_SERVER = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The HTTP base (no trailing slash) and the WebSocket URL of one server."""

    http: str
    ws: str

    def resolve(self, url: str | None) -> str | None:
        """``url`` made absolute against the HTTP base (image URLs may be relative)."""
        if url is None or "://" in url:
            return url
        return self.http + "/" + url.lstrip("/")


def endpoints(server: str) -> Endpoints:
    """The endpoints of ``server`` (``http(s)://`` or ``ws(s)://``, any path ignored).

    Raises :class:`ValueError` for another scheme or a URL without a host.
    """
    parts = urlsplit(server if "://" in server else f"http://{server}")
    schemes = {"http": ("http", "ws"), "https": ("https", "wss"), "ws": ("http", "ws")}
    schemes["wss"] = ("https", "wss")
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"server must be an http(s):// or ws(s):// URL, got {server!r}")
    http, ws = schemes[parts.scheme]
    return Endpoints(
        urlunsplit((http, parts.netloc, "", "", "")),
        urlunsplit((ws, parts.netloc, "/v1/ws", "", "")),
    )


def servers(urls: str | Sequence[str] | None) -> tuple[Endpoints, ...]:
    """The endpoints of every server in ``urls``: one string or several, each of which may
    hold comma-separated URLs; duplicates are dropped, the order is kept. ``None`` (no
    ``--server`` given) means ``COMPANION_SERVER``, or the default server.

    Raises :class:`ValueError` for a bad URL (see :func:`endpoints`) or no URL at all.
    """
    if urls is None:
        urls = os.environ.get("COMPANION_SERVER", DEFAULT_SERVER)
    texts = [urls] if isinstance(urls, str) else list(urls)
    found = [endpoints(part.strip()) for text in texts for part in text.split(",") if part.strip()]
    if not found:
        raise ValueError("no server URL given")
    return tuple(dict.fromkeys(found))


def add_server_flags(
    parser: argparse.ArgumentParser, *, token_help: str, several: bool = False
) -> None:
    """``--server`` (COMPANION_SERVER) and ``--token`` (COMPANION_TOKEN).

    With ``several``, ``--server`` may be repeated and may hold comma-separated URLs (the
    nodes a client fails over between); ``args.server`` is then a list, or ``None``, for
    :func:`servers`.
    """
    default = os.environ.get("COMPANION_SERVER", DEFAULT_SERVER)
    if several:
        parser.add_argument(
            "--server",
            action="append",
            help=(
                "server URL; repeat it or separate URLs with commas to fail over between"
                f" nodes (COMPANION_SERVER, default {DEFAULT_SERVER})"
            ),
        )
        # No list default: argparse would append to it instead of replacing it.
        parser.set_defaults(server=None)
    else:
        parser.add_argument(
            "--server",
            default=default,
            help=f"server URL (COMPANION_SERVER, default {DEFAULT_SERVER})",
        )
    parser.add_argument(
        "--token", default=os.environ.get("COMPANION_TOKEN"), help=f"{token_help} (COMPANION_TOKEN)"
    )


class TokenError(Exception):
    """A token that cannot be read, or one that could not be minted."""


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, **not verified** (``sub`` is the user, ``dev`` the device kind).

    Raises :class:`TokenError` when ``token`` is not a JWT with a JSON object payload.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a token: expected three dot-separated parts")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        data = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError) as exc:
        raise TokenError(f"not a token: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sub"), str):
        raise TokenError("not a token: the payload has no subject")
    return data


def user_of(token: str) -> str:
    """The user a token names. Raises :class:`TokenError`."""
    user: str = claims(token)["sub"]
    return user


async def mint(user: str, device: str, *, ttl_s: int = 24 * 3600) -> str:
    """A token signed by ``companion token USER --device DEVICE`` on this machine.

    Raises :class:`TokenError` when the command fails or prints no token.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "token",
        user,
        "--device",
        device,
        "--ttl",
        str(ttl_s),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(MINT_TIMEOUT_S):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise TokenError("companion token did not answer") from None
    token = out.decode().strip()
    if process.returncode != 0 or token.count(".") != 2:
        raise TokenError(f"companion token failed: {err.decode().strip() or process.returncode}")
    return token
