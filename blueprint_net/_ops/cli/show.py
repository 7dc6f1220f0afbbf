"""``blueprint-net status`` and ``peers``: a running node, as its status
endpoint shows it.

Layer: ops (the operator surface).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from blueprint_net._ops.cli.common import (
    OK,
    UNREACHABLE,
    CommandFailed,
    emit,
)
from blueprint_net._ops.status import duration


def _status(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(
            url.rstrip("/") + "/status.json", timeout=5
        ) as page:
            status: dict[str, Any] = json.load(page)
            return status
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise CommandFailed(
            UNREACHABLE, f"{url}: {getattr(error, 'reason', error)}"
        ) from None


def status(args: argparse.Namespace) -> int:
    data = _status(args.url)
    uptime = data.get("uptime_seconds", 0)
    lines = [
        f"peer id   {data['peer_id']}",
        f"version   {data.get('version', '?')}, up {duration(uptime)}",
        f"listening {', '.join(data['listening'])}",
        "links     "
        + ("plaintext allowed" if data.get("allow_plaintext") else "TLS only"),
        f"peers     {len(data['peers'])}",
        *(f"  {p['peer_id']}  {p['address']}  {p['direction']}" for p in data["peers"]),
        f"kept      {len(data.get('kept_peers', []))}",
        *(_kept_line(k) for k in data.get("kept_peers", [])),
        *_gossip_lines(data),
        f"bans      {data['bans']}",
        *(f"  {name:<40} {value}" for name, value in data["counters"].items()),
    ]
    emit(args, data, "\n".join(lines))
    return OK


def _kept_line(kept: dict[str, Any]) -> str:
    """One ``--peer`` the node keeps connected: where, its state, and why
    the last dial failed while it is not connected."""
    line = f"  {kept['peer_id']}  {kept['address']}  {kept['state']}"
    if kept["state"] != "connected" and kept.get("failures"):
        line += f", {kept['failures']} failed dials: {kept['last_error']}"
    return line


def _gossip_lines(data: dict[str, Any]) -> list[str]:
    """Known against connected peers, and each topic with its mesh."""
    found = data.get("discovery")
    topics = data.get("gossip", {}).get("topics", {})
    lines = (
        []
        if found is None
        else [
            f"known     {found['known_peers']} peer records,"
            f" {found['connected_peers']} connected"
        ]
    )
    lines.append(f"topics    {len(topics)}")
    for topic, figures in topics.items():
        mesh = figures.get("mesh_peers", [])
        lines.append(
            f"  {topic!r}  mesh {len(mesh)}, delivered {figures['delivered']},"
            f" published {figures['published']}"
        )
        lines += (f"    {peer}" for peer in mesh)
    return lines


def peers(args: argparse.Namespace) -> int:
    data = _status(args.url)["peers"]
    lines = [f"{p['peer_id']}  {p['address']:<22} {p['direction']}" for p in data]
    emit(args, data, "\n".join(lines) or "(no verified peers)")
    return OK
