# GPU image of the reward server (linux/amd64; see docs/deploying.md for arm64).
#   Build: deploy/build-image.sh            (or: docker build -t reward-server:0.1.0 .)
#   Run:   docker run --gpus all -p 50051:50051 -p 8000:8000 -v /srv/models:/models:ro reward-server:0.1.0
#          (gRPC on 50051; KServe v2 REST and the RL routes on 8000, --http-port)
#
# Base: Debian's slim Python, no CUDA base image. The CUDA libraries come from the wheels: PyPI's torch
# 2.13.0 is built for CUDA 13 and pulls its runtime, cuBLAS, cuDNN, NCCL as nvidia-*-cu13 wheels, which
# onnxruntime-gpu uses too. A CUDA base image would add a second copy whose version nothing ties to
# torch's (a 12.8 base under cu130 wheels was dead weight). What the host needs is a driver for
# CUDA 13 (>= 580): NVIDIA_REQUIRE_CUDA below makes the NVIDIA container runtime refuse an older
# driver at start, with a message, instead of a failure at the first model load.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

# --- deps: a venv with the pinned dependencies -----------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml's lists alone, at constraints.txt's versions (the ones CI
# tests): this layer (~5 GB) is rebuilt only when those two files change, not on a code change.
# VARIANT=cpu (deploy/build-image.sh --cpu) builds the CPU image: the `cpu` extra, and torch's CPU
# build from PyTorch's CPU index (or, where that index cannot be reached, a local torch +cpu wheel).
ARG VARIANT=gpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# For the build only (deploy/build-image.sh passes the host's): a folder of local wheels, and the CA
# bundle of a TLS-intercepting proxy. Neither is in the image.
ARG PIP_FIND_LINKS
ARG PIP_CERT
COPY pyproject.toml constraints.txt deploy/requirements.py ./
RUN python3 requirements.py pyproject.toml "$VARIANT" > requirements.txt \
 && torch="torch==$(sed -n 's/^torch==//p' constraints.txt)" \
 && if [ "$VARIANT" = cpu ]; then \
      pip install --no-deps --timeout 15 --retries 1 --index-url "$TORCH_CPU_INDEX" "$torch" \
      || pip install --no-deps "$torch+cpu"; fi \
 && pip install -c constraints.txt -r requirements.txt "setuptools>=68" \
 && pip check

# --- build: the code as one wheel (server, client and stubs) ---------------------------------------
FROM deps AS build
COPY README.md ./
COPY client ./client
COPY server ./server
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# --- runtime --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="reward-server" \
      org.opencontainers.image.description="gRPC reward-model server (CUDA 13: needs an NVIDIA driver >= 580)"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility NVIDIA_REQUIRE_CUDA="cuda>=13.0"
RUN useradd --create-home --uid 10001 --user-group reward
# The dependencies' layer is the same image layer until pyproject.toml or constraints.txt change; a
# code change adds only the small layers below (copying a venv that holds the code would re-ship ~5 GB).
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /dist /tmp/dist
RUN pip install --no-cache-dir --no-deps --no-index /tmp/dist/*.whl \
 && rm -rf /tmp/dist \
 && python3 -c "import reward_server.cli, reward_client, reward_api.v1.reward_pb2"
COPY deploy/healthcheck.py /opt/reward-server/healthcheck.py
# The model repository is a volume: mount yours over /models (read-only is enough).
# The tiny demo repository is baked in so that the image answers without one.
COPY model_repository /models
VOLUME ["/models"]
USER 10001
WORKDIR /home/reward
EXPOSE 50051 8000
# Docker only: OCI-format builds (podman / buildah default, Kubernetes) drop HEALTHCHECK, and
# Kubernetes uses its own probes (deploy/kubernetes/deployment.yaml). The script reads the running
# server's own arguments, so it follows --port, --host and --health-port (needed with --tls-cert).
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s \
  CMD ["python3", "/opt/reward-server/healthcheck.py"]
ENTRYPOINT ["reward-server"]
CMD ["serve", "--model-repository", "/models", "--port", "50051"]
