# syntax=docker/dockerfile:1
# A worker: `scriptpool[worker]` (RQ and the Lua, JavaScript and Python engines).
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t scriptpool-worker:0.1.0 .
#
# It runs as root inside the container, with every capability dropped but CAP_SYS_ADMIN (the
# compose file and the Kubernetes manifests drop the rest): the jail needs CAP_SYS_ADMIN to give each
# job its own network namespace, and drops all capabilities in the job's process before any script
# runs. Without it the worker refuses to start (strict jail) unless it is run with
# `--allow-missing-layer network-namespace` (see docs/operations/containers.md).

FROM python:3.11.14-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY coordinator ./coordinator
COPY workers ./workers
COPY sandbox ./sandbox
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.14-slim-bookworm
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --find-links /wheels "scriptpool[worker]"
ENV PYTHONDONTWRITEBYTECODE=1
# Prometheus metrics.
EXPOSE 9465
# Exit 0 when Redis, the coordinator's health and this worker's registration all check out.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s CMD ["scriptpool", "worker", "--check"]
ENTRYPOINT ["scriptpool"]
CMD ["worker"]
