# GPU image of the reward server. Build: docker build -t reward-server .
# Run:   docker run --gpus all -p 50051:50051 -v $PWD/model_repository:/models:ro reward-server
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1

WORKDIR /src
COPY client ./client
COPY pyproject.toml README.md ./
COPY server ./server
# torch from the registry is the CUDA build on Linux (CI and laptops install the CPU build instead).
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir ./client ".[gpu]" \
 && rm -rf /src

# The model repository is a volume: mount yours over /models (read-only is enough):
#   docker run --gpus all -p 50051:50051 -v /srv/models:/models:ro reward-server
# The tiny demo repository is baked in so that the image answers without one.
COPY model_repository /models
RUN useradd --create-home --uid 10001 reward
VOLUME ["/models"]
USER 10001
WORKDIR /home/reward
EXPOSE 50051
# gRPC health (plaintext, no token needed); start-period covers model loading.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s \
  CMD python3 -c "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; \
c=grpc.insecure_channel('127.0.0.1:50051'); \
sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=4).status == h.HealthCheckResponse.SERVING else 1)"
ENTRYPOINT ["reward-server"]
CMD ["serve", "--model-repository", "/models", "--port", "50051"]
