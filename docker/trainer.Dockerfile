# The trainer image: `python -m trainer <overrides>` in every PyTorchJob replica.
#   make images                                   # both images, with docker or podman (build-images.sh)
#   docker build -f docker/trainer.Dockerfile -t gnn-bench/trainer .                     # CPU
#   docker build -f docker/trainer.Dockerfile --build-arg TORCH_VARIANT=cu126 -t ... .    # CUDA
# CUDA builds of torch bring their CUDA libraries as wheels; the GPU node supplies the driver.
#
# Build args, and nothing else differs between builds:
#   BASE_IMAGE       a Python 3.11 image with pip: the public python:3.11-slim, or a local one
#                    (build-images.sh makes it from Debian bookworm where the public one cannot
#                    be pulled)
#   TORCH_VARIANT    cpu, cu126, ...: which build of torch (the PyTorch index's folder name)
#   TORCH_INDEX_URL  where pip finds it (default: the PyTorch index of TORCH_VARIANT)
#   TORCH_WHEELS     instead, a folder of torch wheels mounted into the build, e.g.
#                    podman build --volume /opt/wheels:/torch-wheels:ro --build-arg TORCH_WHEELS=/torch-wheels
#                    (torch==TORCH_VERSION+TORCH_VARIANT is taken from it; its dependencies
#                    from the configured package index)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG TORCH_WHEELS=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN if [ -n "${TORCH_WHEELS}" ]; then \
        pip install "torch==${TORCH_VERSION}+${TORCH_VARIANT}" --find-links "${TORCH_WHEELS}"; \
    else \
        pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"; \
    fi

WORKDIR /app
# Dependencies first (a cached layer while only the code changes), then the code, installed
# editable because the config files (conf/) are read from beside it. The same image can run
# the harness in the cluster (as the gnn-bench-harness ServiceAccount).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY conf/ conf/
COPY rundir/ rundir/
COPY trainer/ trainer/
COPY bench/ bench/
COPY hydra_plugins/ hydra_plugins/
RUN pip install --no-deps -e .

# Datasets and runs live on the shared volume (backend.mount_path); a PyTorchJob sets the command.
ENV GNN_BENCH_DATA=/mnt/bench/datasets
# Run as a non-root user (uid 1000, as the pods' securityContext asks; the NFS server makes
# datasets/ and runs/ on the volume writable for it).
RUN useradd --uid 1000 --gid 0 --create-home --shell /usr/sbin/nologin bench
USER 1000
CMD ["python", "-m", "trainer"]
