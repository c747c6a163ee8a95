# edgemon agent in a container (on a device, the bundle and the systemd unit are the usual way).
# Build from the repository root:  docker build -f deploy/docker/agent.Dockerfile -t edgemon-agent .
# Run it with the host's view (docs/deploy.md):
#   docker run -d --name edgemon-agent --restart=on-failure --pid=host --network=host \
#     -v /etc/edgemon:/etc/edgemon:ro -v edgemon-state:/var/lib/edgemon \
#     -v /data:/data:ro [--gpus all] edgemon-agent
# --pid=host: /proc is the host's (CPU, memory and processes are host-wide anyway); --network=host:
# the host's network counters; the disk plugin sees the file systems mounted into the container
# (bind-mount the host's, read-only); --gpus all: NVIDIA's container toolkit adds NVML and the GPUs.
# Not built in CI (no Docker engine on its machines): hadolint and tests/deploy/test_docker.py check it.

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY edgemon-protocol/ edgemon-protocol/
COPY edgemon-core/ edgemon-core/
COPY plugins/ plugins/
RUN pip install ./edgemon-protocol ./edgemon-core ./plugins/edgemon-cpu ./plugins/edgemon-disk ./plugins/edgemon-gpu-nvml \
    && useradd --system --uid 10002 --home-dir /var/lib/edgemon --create-home edgemon \
    && rm -rf /src
USER 10002
WORKDIR /var/lib/edgemon
ENV EDGEMON_STATE_DIR=/var/lib/edgemon \
    EDGEMON_CONFIG=/etc/edgemon/agent.toml \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility
VOLUME ["/var/lib/edgemon"]
ENTRYPOINT ["edgemon-agent"]
CMD ["run"]
