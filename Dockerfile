# syntax=docker/dockerfile:1
# The fledge image: one static-enough binary on a minimal runtime, run as non-root.
#
#   docker build --build-arg VERSION=0.1.0 -t ghcr.io/fledge-dev/fledge:0.1.0 .
#
# deploy/kubernetes names this image. VERSION must be the workspace's version
# (Cargo.toml): the build checks it against `fledge --version`, so the label cannot
# lie.

# --- build ------------------------------------------------------------------------
# The toolchain of rust-toolchain.toml; Debian 12, like the runtime below, so the
# binary's glibc requirement is met.
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
ARG VERSION=0.1.0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p fledge --bin fledge \
    && install -m 0755 target/release/fledge /usr/local/bin/fledge \
    && test "$(/usr/local/bin/fledge --version)" = "fledge ${VERSION}"

# --- runtime ----------------------------------------------------------------------
# The binary needs only glibc, libgcc_s and libm (ldd): distroless/cc has exactly
# those, no shell and no package manager. The `nonroot` tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="fledge" \
      org.opencontainers.image.description="Progressive delivery (canary releases) in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/fledge-dev/fledge" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /usr/local/bin/fledge /usr/local/bin/fledge
USER 65532:65532
WORKDIR /home/nonroot
# The API and web UI (`listen`), and the first app's proxy in the shipped manifests.
EXPOSE 8080 8000
ENTRYPOINT ["/usr/local/bin/fledge"]
CMD ["serve", "--config", "/etc/fledge/fledge.yaml", "--log-format", "json"]
