# syntax=docker/dockerfile:1
# The standalone proxy: host-harness (`serve`) with the credential filter, on a minimal non-root runtime.
# For users with a registry and a Docker engine; `make image` builds the same content without either.
#
#   docker build -t registry.example.com/ai-proxy:0.1.0 .
#
# Build stage: the pinned Rust toolchain builds the filter for wasm32-wasip1 (linked by scripts/link-filter.sh,
# which runs binaryen's wasm-opt; scripts/build-filter.sh) and the proxy natively, from the committed Cargo.lock only (--locked).
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip1 \
 && apt-get update -q && apt-get install -y -q --no-install-recommends binaryen=108-1 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY durations ./durations
COPY filter ./filter
COPY host-harness ./host-harness
COPY tests ./tests
# Sources embed files from specs/ (their unit tests check the spec's examples).
COPY specs ./specs
COPY scripts/build-proxy-image.sh scripts/build-filter.sh scripts/link-filter.sh scripts/require-tools.sh ./scripts/
RUN scripts/build-filter.sh --locked \
 && cargo build --locked --release -p host-harness-cli \
 && scripts/build-proxy-image.sh --rootfs /rootfs

# Runtime stage: nothing but what scripts/build-proxy-image.sh lays out, the same files `make image` puts in
# its OCI layer: the proxy, the filter, the shared libraries the proxy links (glibc's loader, libc, libm,
# libgcc_s from the build stage's Debian 12), /etc/passwd with the non-root user, /tmp and /var/lib/ai-proxy.
# TLS roots are compiled into the proxy, so there is no CA bundle and no shell.
FROM scratch
COPY --from=build /rootfs/ /
COPY --from=build /src/target/release/host-harness /usr/local/bin/host-harness
COPY --from=build /src/target/wasm/filter.wasm /usr/lib/ai-proxy/filter.wasm
# A numeric non-root user: Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/host-harness"]
CMD ["serve", "--config", "/etc/ai-proxy/proxy.toml"]
