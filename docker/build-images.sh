#!/usr/bin/env bash
# Build both images, trainer and TensorBoard, from docker/*.Dockerfile: `make images`.
#
# `build-images.sh --check` only says whether the engine can start containers here (exit 0) or
# not (exit 1, one line why). Every choice it makes is printed, and recorded with sizes and build times in
# .images/images.json (what tests/test_images.py runs):
#   engine  docker where a Docker daemon answers, else podman (ENGINE=docker|podman to choose);
#           podman gets docker/podman-containers.conf only if a container cannot start without it
#   base    the public python:3.11-slim (PUBLIC_BASE) where it can be pulled, else a Debian
#           bookworm root with Python 3.11 made with debootstrap and imported as LOCAL_BASE (made
#           once; REBUILD_BASE=1 makes it again); BASE_IMAGE=<image> uses that image as is
#   torch   TORCH_WHEELS=<folder> (default: a folder of pip's find-links holding the wheel
#           torch-$TORCH_VERSION+$TORCH_VARIANT for Python 3.11), mounted into the build (podman);
#           else (and with TORCH_WHEELS= set empty) the PyTorch index of TORCH_VARIANT
#           (TORCH_INDEX_URL)
# The Dockerfiles are the same for every path: only the build args BASE_IMAGE, TORCH_VARIANT,
# TORCH_VERSION and TORCH_INDEX_URL or TORCH_WHEELS change.
set -euo pipefail
cd "$(dirname "$0")/.."

PUBLIC_BASE=${PUBLIC_BASE:-docker.io/library/python:3.11-slim}
LOCAL_BASE=${LOCAL_BASE:-localhost/gnn-bench/base:bookworm-py3.11}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
TAG=${TAG:-latest}
TRAINER_IMAGE=${TRAINER_IMAGE:-gnn-bench/trainer:$TAG}
TENSORBOARD_IMAGE=${TENSORBOARD_IMAGE:-gnn-bench/tensorboard:$TAG}
BUILD_DIR=.images  # logs and the record; ignores itself (a .gitignore of "*")
RECORD=$BUILD_DIR/images.json
PYTHON=${PYTHON:-python3}

say() { echo "images: $*"; }
die() { echo "error: $*" >&2; exit 1; }

# --------------------------------------------------------------------------------- engine
if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "neither a Docker daemon nor podman is here: install podman (apt-get install podman runc) or start Docker"
    fi
fi
command -v "$ENGINE" >/dev/null || die "ENGINE=$ENGINE is not installed"
[ "$ENGINE" != docker ] || export DOCKER_BUILDKIT=1  # reads trainer.Dockerfile.dockerignore
say "engine: $ENGINE ($("$ENGINE" --version | head -n1))"

# ------------------------------------------------------- can a container start? (podman)
# Probed with a throw-away root holding only /bin/true (no image needed, nothing pulled).
probe() {
    local dir out
    dir=$(mktemp -d /var/tmp/gnn-bench-probe.XXXXXX)
    for f in /bin/true $(ldd /bin/true | grep -o '/[^ ]*'); do cp -L --parents "$f" "$dir"; done
    out=$(podman run --rm --network none --rootfs "$dir" /bin/true 2>&1) && rc=0 || rc=$?
    rm -rf "$dir"
    PROBE_ERROR=$(echo "$out" | tail -n1 | cut -c1-200)
    return $rc
}
CONTAINERS_CONF_USED=
if [ "$ENGINE" = podman ]; then
    if ! probe; then
        [ -z "${CONTAINERS_CONF:-}" ] || die "podman cannot start a container with CONTAINERS_CONF=$CONTAINERS_CONF: $PROBE_ERROR"
        first_error=$PROBE_ERROR
        export CONTAINERS_CONF=$PWD/docker/podman-containers.conf
        probe || die "podman cannot start a container here, with or without docker/podman-containers.conf: $PROBE_ERROR"
        CONTAINERS_CONF_USED=$CONTAINERS_CONF
        say "podman: the defaults cannot start a container here ($first_error); using docker/podman-containers.conf (no default rlimits, runtime runc)"
    else
        say "podman: starts containers with its defaults"
    fi
fi
if [ "${1:-}" = --check ]; then
    say "check: $ENGINE can start containers here"
    exit 0
fi

# ----------------------------------------------------------------------------------- base
make_local_base() {
    [ "$(id -u)" = 0 ] || die "the public base $PUBLIC_BASE cannot be pulled and debootstrap needs root: run as root, or set BASE_IMAGE to a Python 3.11 image you have"
    command -v debootstrap >/dev/null || die "the public base $PUBLIC_BASE cannot be pulled and debootstrap is missing: apt-get install debootstrap"
    local start=$SECONDS
    root=$(mktemp -d /var/tmp/gnn-bench-base.XXXXXX)
    trap 'rm -rf "$root" "$root.log"' EXIT
    say "base: debootstrap --variant=minbase $DEBIAN_SUITE from $DEBIAN_MIRROR ..."
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase \
        "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 \
        || { tail -n 20 "$root.log" >&2; die "debootstrap failed (log above): check DEBIAN_MIRROR=$DEBIAN_MIRROR"; }
    rm -f "$root.log"
    # As python:3.11-slim: `python` and `pip` on PATH, installing into one site-packages
    # (a venv, since Debian's own Python refuses pip installs into it).
    chroot "$root" python3 -m venv /opt/python
    # This machine's extra certificate authorities (e.g. a proxy in front of the package
    # mirrors), so that pip in the builds trusts what pip here trusts; pip is told to use the
    # system store instead of its own bundle.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
        say "base: added this machine's CAs: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    fi
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
    tar -C "$root" -c . | "$ENGINE" import \
        --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "Debian $DEBIAN_SUITE minbase + Python 3.11 venv at /opt/python (docker/build-images.sh)" \
        - "$LOCAL_BASE" >"$root.log" 2>&1 || { cat "$root.log" >&2; die "$ENGINE import of the Debian root failed"; }
    rm -rf "$root" "$root.log"
    trap - EXIT
    BASE_SECONDS=$((SECONDS - start))
    say "base: made $LOCAL_BASE with debootstrap in ${BASE_SECONDS} s"
}

BASE_SECONDS=0
if [ -n "${BASE_IMAGE:-}" ]; then
    BASE_PATH=given
    say "base: $BASE_IMAGE (BASE_IMAGE, as given)"
elif "$ENGINE" image inspect "$PUBLIC_BASE" >/dev/null 2>&1; then
    BASE_IMAGE=$PUBLIC_BASE BASE_PATH=public
    say "base: $PUBLIC_BASE (public, already here)"
elif pull_error=$("$ENGINE" pull -q "$PUBLIC_BASE" 2>&1); then
    BASE_IMAGE=$PUBLIC_BASE BASE_PATH=public
    say "base: $PUBLIC_BASE (public, pulled)"
else
    say "base: cannot pull $PUBLIC_BASE ($(echo "$pull_error" | tail -n1 | cut -c1-160))"
    BASE_IMAGE=$LOCAL_BASE BASE_PATH=debootstrap
    if [ "${REBUILD_BASE:-0}" != 1 ] && "$ENGINE" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        BASE_PATH=debootstrap-earlier
        say "base: $LOCAL_BASE (made earlier with debootstrap; REBUILD_BASE=1 makes it again)"
    else
        make_local_base
    fi
fi

# ---------------------------------------------------------------------------------- torch
wheel_name="torch-$TORCH_VERSION+$TORCH_VARIANT-cp311-cp311-*.whl"
if [ -z "${TORCH_WHEELS+set}" ] && [ "$ENGINE" = podman ]; then
    for dir in ${PIP_FIND_LINKS:-} $("$PYTHON" -m pip config get global.find-links 2>/dev/null || true); do
        if [ -d "$dir" ] && compgen -G "$dir/$wheel_name" >/dev/null; then TORCH_WHEELS=$dir; break; fi
    done
fi
TORCH_ARGS=(--build-arg "TORCH_VERSION=$TORCH_VERSION" --build-arg "TORCH_VARIANT=$TORCH_VARIANT")
if [ -n "${TORCH_WHEELS:-}" ]; then
    [ "$ENGINE" = podman ] || die "TORCH_WHEELS needs podman (docker build cannot mount a folder): unset it to install torch from the index"
    compgen -G "$TORCH_WHEELS/$wheel_name" >/dev/null || die "TORCH_WHEELS=$TORCH_WHEELS holds no $wheel_name"
    TORCH_WHEELS=$(cd "$TORCH_WHEELS" && pwd)
    TORCH_SOURCE="wheels:$(ls "$TORCH_WHEELS"/$wheel_name | head -n1)"
    # Mounted on /mnt, which the base has (empty), so the build leaves no trace of the mount.
    TORCH_ARGS+=(--volume "$TORCH_WHEELS:/mnt:ro" --build-arg TORCH_WHEELS=/mnt)
    say "torch: $TORCH_VERSION+$TORCH_VARIANT from the wheel on this disk, ${TORCH_SOURCE#wheels:}"
else
    TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$TORCH_VARIANT}
    TORCH_SOURCE="index:$TORCH_INDEX_URL"
    TORCH_ARGS+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    say "torch: $TORCH_VERSION from the index $TORCH_INDEX_URL"
fi

# --------------------------------------------------------------------------------- builds
PULL_ARGS=()
[ "$ENGINE" = podman ] && [ "$BASE_PATH" != public ] && PULL_ARGS=(--pull=never)
NO_CACHE_ARGS=()
[ "${NO_CACHE:-0}" = 1 ] && NO_CACHE_ARGS=(--no-cache)

build() {  # build <name> <tag> <dockerfile> <context> [args...]
    local name=$1 tag=$2 file=$3 context=$4 start log old steps cached
    shift 4
    log=$BUILD_DIR/$name.log
    old=$("$ENGINE" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    start=$SECONDS
    local cmd=("$ENGINE" build --file "$file" --build-arg "BASE_IMAGE=$BASE_IMAGE" "${PULL_ARGS[@]}"
               "${NO_CACHE_ARGS[@]}" "$@" --tag "$tag" "$context")
    local line
    line="${CONTAINERS_CONF_USED:+CONTAINERS_CONF=${CONTAINERS_CONF_USED#"$PWD"/} }$(printf '%q ' "${cmd[@]}")"
    printf -v "${name}_command" '%s' "${line% }"
    say "$name: building $tag from $file (log: $log) ..."
    say "$name: ${line% }"
    if ! "${cmd[@]}" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "building the $name image failed (the end of $log is above)"
    fi
    printf -v "${name}_seconds" '%s' $((SECONDS - start))
    printf -v "${name}_size" '%s' "$("$ENGINE" image inspect --format '{{.Size}}' "$tag")"
    printf -v "${name}_id" '%s' "$("$ENGINE" image inspect --format '{{.Id}}' "$tag")"
    steps=$(grep '^STEP ' "$log" | grep -vc ': FROM ' || true)
    cached=$(grep -c 'Using cache' "$log" || true)
    printf -v "${name}_cached" '%s' "$cached"
    say "$name: $tag, $(( ${name}_size / 1000000 )) MB, built in $(( ${name}_seconds )) s ($cached of $steps steps from the cache)"
    # The image this tag named before, if nothing else uses it, goes (no pile of old builds).
    local id_var=${name}_id
    if [ -n "$old" ] && [ "$old" != "${!id_var}" ]; then
        "$ENGINE" rmi "$old" >/dev/null 2>&1 || true
    fi
}

mkdir -p "$BUILD_DIR"
[ -e "$BUILD_DIR/.gitignore" ] || echo "*" >"$BUILD_DIR/.gitignore"
IGNORE_ARGS=()
[ "$ENGINE" = podman ] && IGNORE_ARGS=(--ignorefile docker/trainer.Dockerfile.dockerignore)
build trainer "$TRAINER_IMAGE" docker/trainer.Dockerfile . "${IGNORE_ARGS[@]}" "${TORCH_ARGS[@]}"
build tensorboard "$TENSORBOARD_IMAGE" docker/tensorboard.Dockerfile docker

# ---------------------------------------------------------------------------------- record
export ENGINE BASE_IMAGE BASE_PATH BASE_SECONDS CONTAINERS_CONF_USED TORCH_SOURCE \
    TORCH_VERSION TORCH_VARIANT TRAINER_IMAGE TENSORBOARD_IMAGE RECORD \
    trainer_seconds trainer_size trainer_id trainer_cached trainer_command tensorboard_command \
    tensorboard_seconds tensorboard_size tensorboard_id tensorboard_cached
ENGINE_VERSION=$("$ENGINE" --version | head -n1) GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown) \
"$PYTHON" - <<'EOF'
import datetime, json, os

e = os.environ
image = lambda name, tag: {"tag": tag, "id": e[f"{name}_id"], "size_bytes": int(e[f"{name}_size"]),
                           "build_s": int(e[f"{name}_seconds"]),
                           "steps_from_cache": int(e[f"{name}_cached"]),
                           "command": e[f"{name}_command"].strip()}
record = {
    "engine": e["ENGINE"], "engine_version": e["ENGINE_VERSION"],
    "containers_conf": e["CONTAINERS_CONF_USED"] or None,
    "base": {"image": e["BASE_IMAGE"], "path": e["BASE_PATH"], "made_s": int(e["BASE_SECONDS"])},
    "torch": {"version": e["TORCH_VERSION"], "variant": e["TORCH_VARIANT"], "source": e["TORCH_SOURCE"]},
    "images": {"trainer": image("trainer", e["TRAINER_IMAGE"]),
               "tensorboard": image("tensorboard", e["TENSORBOARD_IMAGE"])},
    "git_commit": e["GIT_COMMIT"],
    "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
}
tmp = e["RECORD"] + ".tmp"
with open(tmp, "w") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
os.replace(tmp, e["RECORD"])
EOF
say "recorded in $RECORD"
