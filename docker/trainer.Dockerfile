# The trainer image: `python -m trainer <overrides>` in every PyTorchJob replica.
#   docker build -f docker/trainer.Dockerfile -t gnn-bench/trainer .                     # CPU
#   docker build -f docker/trainer.Dockerfile --build-arg TORCH_VARIANT=cu126 -t ... .    # CUDA
# CUDA builds of torch bring their CUDA libraries as wheels; the GPU node supplies the driver.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

WORKDIR /app
# Dependencies first (a cached layer while only the code changes), then the code, installed
# editable because the config files (conf/) are read from beside it. The same image can run
# the harness in the cluster (as the gnn-bench-harness ServiceAccount).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY conf/ conf/
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
