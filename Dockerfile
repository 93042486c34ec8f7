# syntax=docker/dockerfile:1
#
# mtls-shield container image: a static-ish Rust binary on distroless, running as non-root.
#
#   docker build -t mtls-shield .
#   mtls-shield gen-certs --out certs     # or certs/openssl-recipe.sh certs
#   docker run --rm --user "$(id -u):$(id -g)" \
#     -v "$PWD/certs:/etc/mtls-shield/certs:ro" -p 8443:8443 -p 9901:9901 mtls-shield
#
# Layout inside the image:
#   /usr/local/bin/mtls-shield                 the binary
#   /etc/mtls-shield/mtls-shield.toml          config (deploy/docker/mtls-shield.toml); mount your own over it
#   /etc/mtls-shield/certs/                    mount point for server.pem, server.key, truststore.pem
#                                              (relative paths resolve against the config's folder)
# The image runs as uid/gid 65532 ("nonroot"); the key files you mount must be readable by that
# user, or run with --user as above. Ports: 8443 mTLS listener, 9901 admin (/healthz, /readyz, /metrics).
#
# Health checks: distroless has no shell and no curl, so there is no HEALTHCHECK instruction.
# Let the orchestrator probe the admin listener over HTTP instead:
#   liveness   GET http://<pod>:9901/healthz   (200 while the process serves)
#   readiness  GET http://<pod>:9901/readyz    (200 when listening and the upstream TCP-connects,
#                                               503 while draining after SIGTERM)
# deploy/kubernetes/deployment.yaml has both probes. On plain Docker, check from the host:
#   curl -fsS http://127.0.0.1:9901/healthz
#
# This file is replayed without a Docker engine by .ci/docker-recipe.sh, which fails when the
# instructions below change in a way it does not know; keep the two in step.

# Builder: the Rust toolchain the project is tested with. For reproducible builds pin the digest too:
#   docker buildx imagetools inspect rust:1.95-bookworm   ->   FROM rust:1.95-bookworm@sha256:<digest> AS build
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo refuses to build when a target declared in Cargo.toml (the [[bench]]) has no source.
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked

# Runtime: glibc + libgcc + CA certificates, no shell, no package manager. Same Debian 12 as the builder.
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot   -> pin @sha256:<digest> likewise
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mtls-shield" \
      org.opencontainers.image.description="Mutual-TLS terminating reverse proxy for origins behind CloudFront and other CDNs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/mtls-shield /usr/local/bin/mtls-shield
COPY deploy/docker/mtls-shield.toml /etc/mtls-shield/mtls-shield.toml
USER 65532:65532
EXPOSE 8443 9901
# SIGTERM drains gracefully (up to listener.shutdown_timeout, 30s by default); give `docker stop`
# a longer timeout than that: docker stop -t 45.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mtls-shield", "run", "--config", "/etc/mtls-shield/mtls-shield.toml"]
