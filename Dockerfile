# Multi-stage build of the ostree-upload binary; mirrors `make build`.
#   docker build -t ostree-upload .
FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc pkg-config libostree-dev make git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build BINDIR=/out

FROM debian:bookworm-slim
# gnupg for gpg_sign, flatpak for Flatpak repositories' metadata, ostree for
# an operator's ostree prune; a fixed uid so that host directories can be
# given to it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libostree-1-1 ca-certificates gnupg flatpak ostree \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/ostree-upload --create-home ostree-upload \
 && install -d -o ostree-upload -g ostree-upload /srv/ostree /etc/ostree-upload
COPY --from=build /out/ostree-upload /usr/bin/ostree-upload
USER ostree-upload
WORKDIR /var/lib/ostree-upload
EXPOSE 8080
ENTRYPOINT ["/usr/bin/ostree-upload"]
CMD ["--help"]
