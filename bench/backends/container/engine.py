"""The container engine's command line (podman, or docker: the same verbs and flags), and what
its ``inspect`` says of a container.

Every call is one short subprocess of the engine's CLI, in a session of its own (a Ctrl-C meant
for the harness must not cut a ``create`` or ``rm`` in half; the harness cancels the trial
itself). Only verbs and output both engines share are used: ``inspect`` (Docker's JSON, which
podman reproduces), ``ps --quiet``, ``create``/``start``/``kill``/``stop``/``rm``/``logs``,
``network create/inspect/rm`` and ``image inspect``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Written by the project (docker/): no default rlimits, runtime runc; for hosts where podman's
# defaults cannot start a container (see docker/build-images.sh).
PROJECT_CONTAINERS_CONF = Path(__file__).resolve().parents[3] / "docker" / "podman-containers.conf"
EXITED = ("exited", "stopped", "dead")  # docker: exited, dead; podman: exited, stopped
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


class EngineError(Exception):
    """A call of the engine failed; the message is one line naming the call and its error."""


def parse_time(text: str | None) -> float | None:
    """Unix seconds of an inspect timestamp (RFC 3339, nanoseconds kept to float precision);
    None for Go's zero time (never started or never finished)."""
    match = _TIME.match(text or "")
    if not match or match.group(1).startswith("0001-"):
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole = datetime.fromisoformat(match.group(1) + zone).timestamp()
    return whole + float("0." + (match.group(2) or "0"))


@dataclass(frozen=True)
class ContainerState:
    """One container, as ``inspect`` shows it."""

    name: str
    id: str
    status: str  # created | running | exited | ... (the engine's word)
    exit_code: int
    pid: int  # its first process, on this machine (0: not running)
    started_at: float | None
    finished_at: float | None
    labels: dict[str, str] = field(default_factory=dict)
    error: str = ""  # the runtime's error when it could not start
    oom_killed: bool = False
    nano_cpus: int = 0  # its --cpus, in 1e-9 cores
    memory_bytes: int = 0  # its --memory

    @property
    def running(self) -> bool:
        return self.status in ("running", "stopping", "restarting")

    @property
    def exited(self) -> bool:
        return self.status in EXITED

    @classmethod
    def from_inspect(cls, raw: dict[str, Any]) -> ContainerState:
        state, config, host = raw.get("State") or {}, raw.get("Config") or {}, raw.get("HostConfig") or {}
        return cls(
            name=str(raw.get("Name", "")).lstrip("/"),  # docker writes "/name"
            id=str(raw.get("Id", "")),
            status=str(state.get("Status", "")).lower(),
            exit_code=int(state.get("ExitCode") or 0),
            pid=int(state.get("Pid") or 0),
            started_at=parse_time(state.get("StartedAt")),
            finished_at=parse_time(state.get("FinishedAt")),
            labels=dict(config.get("Labels") or {}),
            error=str(state.get("Error") or ""),
            oom_killed=bool(state.get("OOMKilled")),
            nano_cpus=int(host.get("NanoCpus") or 0),
            memory_bytes=int(host.get("Memory") or 0),
        )


def network_subnets(raw: dict[str, Any]) -> list[str]:
    """The subnets of a network from its ``network inspect`` (podman's netavark or Docker's)."""
    podman = [s.get("subnet") for s in raw.get("subnets") or []]
    docker = [c.get("Subnet") for c in (raw.get("IPAM") or {}).get("Config") or []]
    return [s for s in podman + docker if s]


class Engine:
    """``podman`` or ``docker`` on this machine; ``containers_conf`` is podman's CONTAINERS_CONF."""

    def __init__(self, name: str, containers_conf: str | None = None, timeout_s: float = 120.0):
        self.name, self.containers_conf, self.timeout_s = name, containers_conf, timeout_s
        self.env = dict(os.environ)
        if containers_conf:
            self.env["CONTAINERS_CONF"] = containers_conf

    @property
    def installed(self) -> bool:
        return shutil.which(self.name) is not None

    def __call__(self, *args: str, check: bool = True, timeout: float | None = None,
                 merge_stderr: bool = False) -> subprocess.CompletedProcess[str]:
        try:
            out = subprocess.run(
                [self.name, *args], capture_output=not merge_stderr, text=True, env=self.env,
                timeout=timeout or self.timeout_s, start_new_session=True,
                stdin=subprocess.DEVNULL,
                **({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if merge_stderr else {}),
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"`{self.name} {' '.join(args[:2])}` did not answer within "
                              f"{exc.timeout:.0f} s") from exc
        except OSError as exc:
            raise EngineError(f"cannot run {self.name}: {exc.strerror}") from exc
        if check and out.returncode != 0:
            raise EngineError(f"`{self.name} {' '.join(args[:2])}` failed: {last_line(out.stderr)}")
        return out

    # -- containers
    def ids(self, label: str) -> list[str]:
        """Ids of every container (running or not) with the label ``key=value``."""
        out = self("ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={label}")
        return out.stdout.split()

    def inspect(self, refs: list[str]) -> list[ContainerState]:
        """The containers of ``refs`` (names or ids) that exist; missing ones are left out."""
        if not refs:
            return []
        out = self("inspect", "--type", "container", *refs, check=False)
        try:
            found = json.loads(out.stdout or "[]")
        except json.JSONDecodeError as exc:
            raise EngineError(f"`{self.name} inspect` printed no JSON: {last_line(out.stderr)}") from exc
        if out.returncode != 0 and not found and "no such" not in out.stderr.lower():
            raise EngineError(f"`{self.name} inspect` failed: {last_line(out.stderr)}")
        return [ContainerState.from_inspect(raw) for raw in found or []]

    def create(self, argv: list[str]) -> str:
        return self("create", *argv).stdout.strip().splitlines()[-1]

    def start(self, names: list[str]) -> None:
        self("start", *names)

    def kill(self, names: list[str], signal: str = "KILL") -> bool:
        """Send ``signal``; False if the engine refused (e.g. none of them runs any more)."""
        return self("kill", "--signal", signal, *names, check=False).returncode == 0

    def stop(self, names: list[str], timeout_s: int) -> None:
        self("stop", "--time", str(timeout_s), *names, check=False,
             timeout=self.timeout_s + timeout_s)

    def remove(self, names: list[str]) -> None:
        if names:
            self("rm", "--force", *names, check=False)

    def logs(self, name: str, tail_lines: int) -> str:
        """The container's output (stdout and stderr as it wrote them), its last lines.

        Read whole and cut here: podman 4.3's ``logs --tail`` joins lines of its k8s-file log.
        """
        out = self("logs", name, check=False, merge_stderr=True)
        if out.returncode != 0:
            return ""
        return "\n".join(out.stdout.splitlines()[-tail_lines:])

    # -- networks and images
    def network_create(self, argv: list[str]) -> None:
        self("network", "create", *argv)

    def network_inspect(self, name: str) -> dict[str, Any] | None:
        out = self("network", "inspect", name, check=False)
        try:
            found = json.loads(out.stdout or "[]")
        except json.JSONDecodeError:
            found = []
        return found[0] if found else None

    def network_remove(self, name: str) -> bool:
        return self("network", "rm", name, check=False).returncode == 0

    def image_id(self, image: str) -> str | None:
        out = self("image", "inspect", "--format", "{{.Id}}", image, check=False)
        if out.returncode != 0:
            return None
        return out.stdout.strip().removeprefix("sha256:") or None

    def version(self) -> str:
        out = self("--version", check=False)
        return out.stdout.strip()


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
