# syntax=docker/dockerfile:1.7
#
# Image of the `api` binary (HTTP api; `api migrate` applies the migrations and exits).
#
# Build context: the repository root (the workspace is needed to build one member):
#   docker build -f deploy/docker/api.Dockerfile -t pwrecovery/api .
# What enters the context is decided by api.Dockerfile.dockerignore beside this file
# (BuildKit reads <Dockerfile>.dockerignore in preference to a root .dockerignore).
#
# The api runs pending migrations at start; configuration is the environment only
# (README "Configuration"). The image sets API_BIND=0.0.0.0:8080 because the binary's
# default (127.0.0.1) is unreachable from outside a container.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build ---------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /app
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
COPY . .
# The registry, git checkouts and target/ live in BuildKit cache mounts (shared with the
# mail-worker image, so the common dependencies compile once). target/ is a cache mount, so
# the binary is copied out of it in the same step.
RUN --mount=type=cache,id=pwrecovery-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=pwrecovery-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=pwrecovery-target,target=/app/target,sharing=locked \
    cargo build --release --locked -p api \
 && install -D -m 0755 target/release/api /out/api

# ---- runtime -------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# zlib1g: the binary links the system libz (already in slim, listed so the dependency is
# explicit). No ca-certificates: every TLS client of the binary trusts the Mozilla roots
# compiled into it plus the PEM file named by TLS_CA_FILE (mount a private CA there), never
# the system store. Versions are not pinned: Debian drops superseded versions from the
# archive, so pins break rebuilds; pin the base image by digest instead for reproducible
# releases.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=builder /out/api /usr/local/bin/api

LABEL org.opencontainers.image.title="pwrecovery-api" \
      org.opencontainers.image.description="Password-recovery HTTP api (sign-up, sign-in, forgot/reset password)" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# /metrics listens on its own port (scraped per pod/container, never routed publicly).
ENV API_BIND=0.0.0.0:8080 \
    API_METRICS_BIND=0.0.0.0:9464 \
    LOG_FORMAT=json \
    RUST_LOG=info
WORKDIR /app
USER 10001:10001
EXPOSE 8080 9464
# SIGTERM: stop accepting, drain in-flight requests for up to SHUTDOWN_TIMEOUT_SECS, exit 0.
STOPSIGNAL SIGTERM
# No HEALTHCHECK here: the listen address is configurable and the orchestrators define their
# own checks (deploy/compose.yaml, deploy/k8s/api-deployment.yaml).
ENTRYPOINT ["/usr/local/bin/api"]
