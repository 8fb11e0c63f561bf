# syntax=docker/dockerfile:1.7
#
# Image of the `mail-worker` binary (consumes mail jobs from RabbitMQ and delivers them over
# SMTP; `mail-worker dlq list` / `mail-worker dlq replay --id ID|--all` handle dead letters,
# `mail-worker healthcheck` is the container health check).
#
# Build context: the repository root (the workspace is needed to build one member), with the
# release's identity as build arguments (they become the OCI labels below):
#   docker build -f deploy/docker/mail-worker.Dockerfile \
#     --build-arg VERSION="$(git describe --tags --always)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE="$(git remote get-url origin)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t pwrecovery/mail-worker:"$(git describe --tags --always)" .
# What enters the context is decided by mail-worker.Dockerfile.dockerignore beside this file
# (BuildKit reads <Dockerfile>.dockerignore in preference to a root .dockerignore).
#
# Email templates are compiled into the binary; nothing but the binary (and the system libz)
# is needed at run time (MAIL_TEMPLATE_DIR, when set, is a directory you mount).
# The image sets WORKER_HTTP_BIND=0.0.0.0:8081 (/healthz, /readyz, /metrics) because the
# binary's default (127.0.0.1) is unreachable from outside a container.

# The builder is pinned to a Rust release (the workspace needs >= 1.94); the runtime base is
# pinned by digest, so a rebuild of the same revision gets the same bytes. Refresh the digest
# deliberately (`docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot`) when
# the base gets security fixes.
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

# ---- build ---------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /app
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
# The commit `pwrecovery_build_info` reports (the build context has no .git).
ARG REVISION=unknown
ENV GIT_COMMIT=${REVISION}
COPY . .
# The registry, git checkouts and target/ live in BuildKit cache mounts (shared with the
# api image, so the common dependencies compile once). target/ is a cache mount, so the
# binary is copied out of it in the same step, into /out laid out like the runtime's root.
# The binary links the system libz, which the distroless cc image does not ship: it is copied
# from the builder (same Debian release, so the same glibc) into the multiarch library
# directory the dynamic loader searches.
RUN --mount=type=cache,id=pwrecovery-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=pwrecovery-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=pwrecovery-target,target=/app/target,sharing=locked \
    cargo build --release --locked -p mail-worker \
 && install -D -m 0755 target/release/mail-worker /out/usr/local/bin/mail-worker \
 && multiarch="$(gcc -dumpmachine)" \
 && install -D -m 0644 "$(readlink -f "/usr/lib/$multiarch/libz.so.1")" "/out/usr/lib/$multiarch/libz.so.1"

# ---- runtime -------------------------------------------------------------------------------
# Distroless: glibc, libgcc, CA roots and tzdata, and no shell, package manager or curl.
# Every TLS client of the binary trusts the Mozilla roots compiled into it plus the PEM file
# named by TLS_CA_FILE (mount a private CA there), never the image's store.
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /out/ /

# The release's identity (see the build command above). The defaults mark a local build.
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="pwrecovery-mail-worker" \
      org.opencontainers.image.description="Password-recovery mail worker (RabbitMQ -> SMTP with retries and a dead-letter queue)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

ENV WORKER_HTTP_BIND=0.0.0.0:8081 \
    MAIL_TRANSPORT=smtp \
    LOG_FORMAT=json \
    RUST_LOG=info
WORKDIR /app
# uid/gid 10001 (the Kubernetes manifests' runAsUser), not the base's nonroot (65532): the
# same numeric owner everywhere the image runs. No home and no login are needed.
USER 10001:10001
EXPOSE 8081
# SIGTERM: stop consuming, finish in-flight sends for up to SHUTDOWN_TIMEOUT_SECS, exit 0;
# prefetched but unstarted jobs return to the queue.
STOPSIGNAL SIGTERM
# `mail-worker healthcheck` asks this process's /healthz on WORKER_HTTP_BIND (0.0.0.0 through the
# loopback) and exits 0 on a 200 within 3 s: liveness only, so a dependency outage does not
# mark the container unhealthy. Kubernetes ignores HEALTHCHECK and uses the manifests' probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/mail-worker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/mail-worker"]
