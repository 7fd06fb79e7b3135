# syntax=docker/dockerfile:1
# The coordinator: `scriptpool[server]` only (gRPC, Redis, RQ; no script engines), as a non-root user.
# Build from the repository root:
#   docker build -f docker/coordinator.Dockerfile -t scriptpool-coordinator:0.1.0 .
# It needs a Redis (REDIS_URL; Redis >= 7.0, or a Sentinel group: redis+sentinel://...).

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
    pip install --no-cache-dir --find-links /wheels "scriptpool[server]"
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/scriptpool --create-home scriptpool
USER 10001:10001
WORKDIR /var/lib/scriptpool
ENV SCRIPTPOOL_LISTEN=0.0.0.0:50051 \
    SCRIPTPOOL_STATE_DIR=/var/lib/scriptpool \
    PYTHONDONTWRITEBYTECODE=1
# gRPC (clients and the workers' global calls); Prometheus metrics.
EXPOSE 50051 9464
ENTRYPOINT ["scriptpool"]
CMD ["coordinator"]
