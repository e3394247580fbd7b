# TensorBoard over the shared volume (k8s/base/infra/tensorboard.yaml passes --logdir).
#   make images                                   # both images, with docker or podman (build-images.sh)
#   docker build -f docker/tensorboard.Dockerfile -t gnn-bench/tensorboard docker/
# BASE_IMAGE: a Python 3.11 image with pip (see trainer.Dockerfile).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TENSORBOARD_VERSION=2.21.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "tensorboard==${TENSORBOARD_VERSION}" \
    && useradd --uid 1000 --create-home tensorboard
USER 1000
EXPOSE 6006
ENTRYPOINT ["tensorboard"]
CMD ["--logdir=/mnt/bench/runs", "--bind_all", "--port=6006"]
