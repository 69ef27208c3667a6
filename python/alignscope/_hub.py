"""Fail fast offline: the check a model loader makes before it lets a hub client download.

huggingface_hub and open_clip retry a download that cannot connect for the better part of a
minute before they give up; a loader that needs files it does not have locally asks
:func:`download_blocked` first, and refuses at once with its own offline hint when the hub
cannot be reached. Nothing here downloads: the check is a lookup in the local cache, the
offline variables of huggingface_hub, and one TCP connect with a short timeout.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

# Seconds the TCP connect to the hub (or the proxy) may take: a reachable host answers in well
# under a second; a dropped packet otherwise hangs until the OS gives up, minutes later.
HUB_TIMEOUT_S = 3.0
# The variables that make huggingface_hub (and transformers, diffusers) refuse every request.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = frozenset({"1", "ON", "YES", "TRUE"})  # huggingface_hub's own reading of them
# ORG/NAME or NAME, as the hub spells repository ids (a path is never one: no leading / . ~)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?")


def hub_endpoint() -> str:
    """The Hugging Face hub's address: ``HF_ENDPOINT`` (a mirror) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is spelled like a hub repository id ("org/name" or "name")."""
    return bool(_HUB_ID.fullmatch(text)) and ".." not in text and not text.endswith((".", "-"))


def hub_cached(repo_id: str, files: Iterable[str | tuple[str, ...]]) -> bool:
    """Whether every one of ``files`` of the hub model ``repo_id`` is in the local
    huggingface_hub cache (HF_HUB_CACHE); a tuple names alternatives, any one of which will do
    (e.g. the safetensors and the pickle form of the same weights)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # without huggingface_hub nothing is cached (and nothing downloads)
        return False
    try:
        for item in files:
            options = (item,) if isinstance(item, str) else item
            if not any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in options):
                return False
    except ValueError:  # an id the hub would refuse (HFValidationError): nothing cached
        return False
    return True


def unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be reached now, or None when it answers.

    Offline when one of :data:`OFFLINE_VARIABLES` is set (as huggingface_hub reads them), or
    when a TCP connect to the host, or to the proxy that would carry the request
    (``HTTPS_PROXY``...; ``NO_PROXY`` honoured), fails or gets no answer within
    :data:`HUB_TIMEOUT_S`. Only the connect is tried: nothing is sent.
    """
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").upper() in _TRUE:
            return f"{name} is set"
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    return _connect(host, port, HUB_TIMEOUT_S)


def _connect(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens within ``timeout`` seconds (name lookup
    included, which a socket timeout does not bound: hence the thread), else why not."""
    outcome: dict[str, str | None] = {}

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["error"] = None
        except OSError as exc:
            outcome["error"] = str(exc) or type(exc).__name__

    thread = threading.Thread(target=attempt, name="alignscope-hub-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    error = outcome["error"]
    return None if error is None else f"{host}:{port}: {error}"


def download_blocked(url: str) -> str | None:
    """None when ``url`` can be downloaded from now; else a phrase for an error message:
    "not in the local cache, and huggingface.co cannot be reached (HF_HUB_OFFLINE is set)".
    Call it only for files that are not in the local cache."""
    reason = unreachable(url)
    if reason is None:
        return None
    return f"not in the local cache, and {urlsplit(url).hostname} cannot be reached ({reason})"


def hub_download_blocked(repo_id: str, files: Iterable[str | tuple[str, ...]]) -> str | None:
    """:func:`download_blocked` for the hub model ``repo_id``: None when ``files`` are all in
    the local cache (see :func:`hub_cached`) or the hub answers."""
    if hub_cached(repo_id, files):
        return None
    return download_blocked(hub_endpoint())
