# Meta-Dropout experiments in the official TensorFlow image of the version the project pins
# (requirements-cpu.txt: tensorflow-cpu==2.21.0). The image brings TensorFlow (and, for -gpu, CUDA);
# we add requirements.txt, the rest of the README's install. Code only: datasets and results live in
# the volumes below (docker-compose.yml bind-mounts ./data and ./results there).
#   docker build -t metadrop .                        # GPU image: tensorflow/tensorflow:2.21.0-gpu
#   docker build -t metadrop --build-arg DEVICE=cpu . # CPU image: tensorflow/tensorflow:2.21.0
# BASE replaces the repository of the base image (CI builds on a local stand-in, .ci/docker.sh).
ARG TF_VERSION=2.21.0
ARG DEVICE=gpu
ARG BASE=tensorflow/tensorflow

FROM ${BASE}:${TF_VERSION}-gpu AS tf-gpu
FROM ${BASE}:${TF_VERSION} AS tf-cpu

# hadolint ignore=DL3006
FROM tf-${DEVICE}

# The user that runs the experiments; give it your uid/gid so files in ./data and ./results are yours.
ARG UID=1000
ARG GID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY requirements.txt ./
RUN python -m pip install --no-cache-dir -r requirements.txt \
    && groupadd --non-unique --gid "${GID}" app \
    && useradd --no-log-init --non-unique --uid "${UID}" --gid "${GID}" --create-home app

# Code stays root-owned (read-only to the user); only the data and results folders are its own.
COPY . .
RUN mkdir -p data results && chown app:app data results

USER ${UID}:${GID}
VOLUME ["/app/data", "/app/results"]
CMD ["python", "main.py", "--help"]
