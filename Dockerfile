# The workshop image: knetsim, its lessons and the Debian packages it drives.
#   docker build -t knetsim .
#   docker run -it --privileged --rm knetsim                               # default scenario, then the console
#   docker run -it --privileged --rm knetsim lessons/03-loadbalance.rhai   # a lesson
# --privileged: knetsim creates network namespaces, veths, bridges, VXLAN devices and
# nftables rules, all inside the container's own network namespace.

# Stage 1: build the release binary (the toolchain stays in this stage).
FROM rust:1-bookworm AS build
ARG DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# Build-only Debian packages (protoc for the etcd client, ...): the same list scripts/setup reads.
COPY scripts/build-packages.txt scripts/build-packages.txt
RUN apt-get update \
 && sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/build-packages.txt \
    | xargs apt-get install -y -q --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bins

# Stage 2: the runtime image: Debian slim, the runtime packages, the binary and the lessons.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# Exactly the runtime packages of scripts/packages.txt (one list for scripts/ and the image;
# tests/packages.rs fails if they drift apart).
COPY scripts/packages.txt /tmp/packages.txt
RUN apt-get update \
 && sed -e 's/#.*//' -e '/^[[:space:]]*$/d' /tmp/packages.txt \
    | xargs apt-get install -y -q --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt
WORKDIR /knetsim
COPY --from=build /src/target/release/knetsim /usr/local/bin/knetsim
COPY lessons/ lessons/
COPY scenarios/ scenarios/
COPY utils/ utils/
# No argument: the default two-cluster scenario, then the console.
# An argument: a lesson or scenario path relative to /knetsim, e.g. lessons/01-flannel.rhai.
ENTRYPOINT ["knetsim"]
