# Multi-stage build: cgo for SQLite, the goolm tag for pure-Go crypto.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -tags goolm -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/matrix2mqtt ./cmd/matrix2mqtt

# No ffmpeg/ffprobe here, to keep the image small: videos are sent without a measured size,
# duration or thumbnail (docs/operations.md says how to add them).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data matrix2mqtt \
    && mkdir -p /data && chown matrix2mqtt /data
COPY --from=build /out/matrix2mqtt /usr/local/bin/matrix2mqtt
USER matrix2mqtt
VOLUME /data
ENV DATA_DIR=/data \
    HTTP_LISTEN=:8080 \
    LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["matrix2mqtt", "healthcheck"]
ENTRYPOINT ["matrix2mqtt"]
