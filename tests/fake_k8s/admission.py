"""Pod Security admission, as the API server enforces it on Pod creation.

A namespace labelled ``pod-security.kubernetes.io/enforce: <level>`` rejects Pods that break
the level's policies (403 Forbidden, ``violates PodSecurity "<level>:<version>": ...``). The
checks below are the Pod Security Standards' controls, each named as the admission message
names it (https://kubernetes.io/docs/concepts/security/pod-security-standards/ ,
https://kubernetes.io/docs/concepts/security/pod-security-admission/):

baseline: no host namespaces, no privileged containers, capabilities added only from the
baseline set, no hostPath volumes, no host ports, seccomp not ``Unconfined``;
restricted (also): only configMap, csi, downwardAPI, emptyDir, ephemeral,
persistentVolumeClaim, projected and secret volumes; ``allowPrivilegeEscalation: false``,
``capabilities.drop: [ALL]`` (only ``NET_BIND_SERVICE`` may be added), ``runAsNonRoot: true``
and ``runAsUser`` not 0, ``seccompProfile`` ``RuntimeDefault`` or ``Localhost``, in every
container and init container (the pod-level securityContext counts for the fields it has).
"""

from __future__ import annotations

from typing import Any

ENFORCE = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def violations(pod: dict[str, Any], level: str) -> list[str]:
    """The admission's reasons a pod breaks ``level`` (empty: allowed)."""
    if level not in ("baseline", "restricted"):
        return []
    spec = pod.get("spec") or {}
    pod_sec = spec.get("securityContext") or {}
    containers = _containers(spec)
    found: list[str] = []
    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        found.append(f"host namespaces ({', '.join(host)})")
    privileged = [c["name"] for c in containers if (c.get("securityContext") or {}).get("privileged")]
    if privileged:
        found.append(f"privileged (container{'s' * (len(privileged) > 1)} {_quoted(privileged)} "
                     "must not set securityContext.privileged=true)")
    added = {c["name"]: sorted(set(((c.get("securityContext") or {}).get("capabilities") or {})
                                   .get("add") or []) - BASELINE_CAPS) for c in containers}
    bad_add = [n for n, caps in added.items() if caps]
    if bad_add:
        found.append(f"non-default capabilities (containers {_quoted(bad_add)} must not include "
                     "capabilities beyond the baseline set in securityContext.capabilities.add)")
    host_path = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_path:
        found.append(f"hostPath volumes (volumes {_quoted(host_path)})")
    ports = [c["name"] for c in containers for p in c.get("ports") or [] if p.get("hostPort")]
    if ports:
        found.append(f"hostPort (containers {_quoted(sorted(set(ports)))} use hostPorts)")

    def seccomp(c: dict[str, Any]) -> str | None:
        own = ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        return own or (pod_sec.get("seccompProfile") or {}).get("type")

    unconfined = [c["name"] for c in containers if seccomp(c) == "Unconfined"]
    if unconfined:
        found.append(f"seccompProfile (containers {_quoted(unconfined)} must not set "
                     'securityContext.seccompProfile.type to "Unconfined")')
    if level == "baseline":
        return found

    kinds = [next((k for k in v if k != "name"), "?") for v in spec.get("volumes") or []]
    bad_volumes = [v["name"] for v, k in zip(spec.get("volumes") or [], kinds, strict=True)
                   if k not in RESTRICTED_VOLUMES and k != "hostPath"]
    if bad_volumes:
        found.append(f"restricted volume types (volumes {_quoted(bad_volumes)} use restricted "
                     "volume types)")
    escalation = [c["name"] for c in containers
                  if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False]
    if escalation:
        found.append(f"allowPrivilegeEscalation != false (container{'s' * (len(escalation) > 1)} "
                     f"{_quoted(escalation)} must set securityContext.allowPrivilegeEscalation="
                     "false)")
    caps = [c["name"] for c in containers
            if "ALL" not in ((((c.get("securityContext") or {}).get("capabilities") or {})
                              .get("drop")) or [])
            or set(((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or [])
            - {"NET_BIND_SERVICE"}]
    if caps:
        found.append(f"unrestricted capabilities (container{'s' * (len(caps) > 1)} {_quoted(caps)} "
                     'must set securityContext.capabilities.drop=["ALL"])')

    def field(c: dict[str, Any], key: str) -> Any:
        own = (c.get("securityContext") or {}).get(key)
        return own if own is not None else pod_sec.get(key)

    non_root = [c["name"] for c in containers if field(c, "runAsNonRoot") is not True]
    if non_root:
        found.append(f"runAsNonRoot != true (pod or container{'s' * (len(non_root) > 1)} "
                     f"{_quoted(non_root)} must set securityContext.runAsNonRoot=true)")
    root = [c["name"] for c in containers if field(c, "runAsUser") == 0]
    if root:
        found.append(f"runAsUser=0 (containers {_quoted(root)} must not set runAsUser=0)")
    no_seccomp = [c["name"] for c in containers if seccomp(c) not in ("RuntimeDefault", "Localhost")]
    if no_seccomp:
        found.append(f"seccompProfile (pod or container{'s' * (len(no_seccomp) > 1)} "
                     f"{_quoted(no_seccomp)} must set securityContext.seccompProfile.type to "
                     '"RuntimeDefault" or "Localhost")')
    return found


def check(namespace: dict[str, Any] | None, pod: dict[str, Any]) -> str | None:
    """The 403 message for a pod the namespace's enforced level rejects, else None."""
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(ENFORCE, "privileged")
    found = violations(pod, level)
    if not found:
        return None
    version = labels.get(ENFORCE_VERSION, "latest")
    name = (pod.get("metadata") or {}).get("name", "")
    return f'pods "{name}" is forbidden: violates PodSecurity "{level}:{version}": ' + ", ".join(found)
