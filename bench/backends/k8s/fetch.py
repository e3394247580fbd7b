"""Fetch a trial's files from the shared volume, without mounting anything here.

The trainers write TensorBoard events and ``summary.json`` to the PVC. ``k8s/base`` runs a
read-only file server on the same volume (nginx, ``autoindex_format json``) behind a ClusterIP
Service; the harness reaches it through the API server's service proxy
(``/api/v1/namespaces/<ns>/services/<files_service>/proxy/<path>``), so it needs no port-forward,
no exec and no write access: only ``get`` on ``services/proxy`` of that one Service.

A directory listing is nginx's JSON: ``[{"name": ..., "type": "file" | "directory", ...}]``.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from bench.backends.k8s.client import KubeClient
from rundir import atomic_write_bytes


def volume_path(path: str, mount_path: str) -> str:
    """A path as the pods see it (under ``mount_path``), relative to the volume's root."""
    return str(PurePosixPath(path).relative_to(PurePosixPath(mount_path)))


def fetch_file(client: KubeClient, remote: str, dest: Path) -> bool:
    """Copy one file; False when the volume has no such file."""
    data = client.proxy_get(remote)
    if data is None:
        return False
    atomic_write_bytes(dest, data)
    return True


def fetch_tree(client: KubeClient, remote_dir: str, dest: Path, depth: int = 8) -> list[Path]:
    """Copy a directory recursively; returns the files written (none when it does not exist)."""
    listing = client.proxy_get(remote_dir.rstrip("/") + "/")
    if listing is None:
        return []
    try:
        entries = json.loads(listing)
    except ValueError as exc:
        raise ValueError(
            f"the file server did not answer a JSON listing for {remote_dir}/ (is it the nginx "
            "of k8s/base with autoindex_format json?)"
        ) from exc
    written: list[Path] = []
    for entry in entries:
        name = str(entry.get("name", ""))
        if not name or "/" in name or name in (".", ".."):
            continue  # never write outside dest
        remote = f"{remote_dir.rstrip('/')}/{name}"
        if entry.get("type") == "directory" and depth > 0:
            written += fetch_tree(client, remote, dest / name, depth - 1)
        elif entry.get("type") == "file" and fetch_file(client, remote, dest / name):
            written.append(dest / name)
    return written
