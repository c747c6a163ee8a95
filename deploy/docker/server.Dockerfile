# edgemon server (collector, maintenance, notifications, HTTP API and dashboard), non-root.
# Build from the repository root:  docker build -f deploy/docker/server.Dockerfile -t edgemon-server .
# Not built in CI (no Docker engine on its machines): hadolint and tests/deploy/test_docker.py check it.

FROM node:20-bookworm-slim AS dashboard
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm install --no-audit --no-fund --loglevel=error
COPY frontend/ ./
# vite writes the build into the server package (../server/src/edgemon_server/static)
RUN mkdir -p /src/server/src/edgemon_server && npm run build --silent

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY edgemon-protocol/ edgemon-protocol/
COPY server/ server/
COPY --from=dashboard /src/server/src/edgemon_server/static/ server/src/edgemon_server/static/
RUN pip install ./edgemon-protocol './server[notify]' \
    && useradd --system --uid 10001 --home-dir /var/lib/edgemon-server --create-home edgemon-server \
    && rm -rf /src
USER 10001
WORKDIR /var/lib/edgemon-server
# SQLite by default in the volume; set EDGEMON_DATABASE_URL=postgresql+psycopg://... for a fleet.
# Any bind address but loopback needs EDGEMON_API_TOKEN (or EDGEMON_API_TOKEN_FILE).
ENV EDGEMON_DATABASE_URL=sqlite:////var/lib/edgemon-server/edgemon.db \
    EDGEMON_HTTP_BIND=0.0.0.0:8000 \
    EDGEMON_LOG_FORMAT=json
VOLUME ["/var/lib/edgemon-server"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["edgemon-server"]
CMD ["run"]
