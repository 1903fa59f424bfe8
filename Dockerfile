# syntax=docker/dockerfile:1.7
#
# Registrar's image: a release build on Debian bookworm, run as uid 65532 on
# bookworm-slim. Build (BuildKit is required for the cache mounts):
#
#   docker buildx build -t registrar:dev .
#   docker run --rm -p 8080:8080 -v registrar-state:/var/lib/registrar registrar:dev
#
# Everything Registrar writes is under /var/lib/registrar (state_dir: the SQLite store,
# the git mirror, generated tokens); the root filesystem can be read-only.
# /etc/registrar/config.yaml is deploy/base/config.yaml (in Kubernetes the ConfigMap is
# mounted over /etc/registrar); the templates are in /usr/share/registrar/hardware-templates.

# Keep in step with the toolchain CI tests with (Cargo.lock's dependencies need more than
# the crate's rust-version).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
ARG TARGETARCH
# git2's "https" feature links the system OpenSSL (openssl-sys) and zlib (libz-sys);
# SQLite (rusqlite "bundled"), libgit2 and aws-lc are compiled from source with cc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and the target directory are BuildKit caches (one target per architecture,
# so an amd64 and an arm64 build never share object files). The cache is not part of the
# image, so the binary is copied out in the same step. `strip --strip-debug` drops the
# release profile's line tables (137 MB -> 27 MB) and keeps the symbols, so a backtrace
# still names functions.
RUN --mount=type=cache,id=cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=registrar-target-${TARGETARCH},target=/src/target,sharing=locked \
    cargo build --release --locked --bin registrar \
 && install -D -m 0755 target/release/registrar /out/registrar \
 && strip --strip-debug /out/registrar \
 && /out/registrar --version

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG DEBIAN_RELEASE
# What the binary links besides glibc (ldd): libssl3/libcrypto (git over HTTPS), libz,
# libgcc_s; zlib1g and libgcc-s1 are already in the slim image. ca-certificates: GitHub's
# and the Kubernetes API's TLS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 registrar \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/registrar --no-create-home \
      --shell /usr/sbin/nologin registrar \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/registrar
COPY --from=build /out/registrar /usr/local/bin/registrar
COPY hardware-templates/ /usr/share/registrar/hardware-templates/
COPY deploy/base/config.yaml /etc/registrar/config.yaml
# The review commands (`kubectl exec deploy/registrar -- registrar proposals`, `backup`, ...)
# find the configuration without --config.
ENV REGISTRAR_CONFIG=/etc/registrar/config.yaml
USER 65532:65532
WORKDIR /var/lib/registrar
VOLUME ["/var/lib/registrar"]
EXPOSE 8080

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="registrar" \
      org.opencontainers.image.description="Discovers bare-metal machines for Tinkerbell and proposes their Hardware manifests to a GitOps repository" \
      org.opencontainers.image.source="https://github.com/registrar/registrar" \
      org.opencontainers.image.documentation="https://github.com/registrar/registrar/blob/main/docs/operations.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_RELEASE}-slim"

ENTRYPOINT ["/usr/local/bin/registrar"]
CMD ["serve", "--config", "/etc/registrar/config.yaml"]
