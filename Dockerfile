# Builds the one nimbus binary; docker-compose.yml runs it as migrate,
# server and worker.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/nimbus ./cmd/nimbus

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/nimbus --create-home nimbus
COPY --from=build /out/nimbus /usr/local/bin/nimbus
USER nimbus
WORKDIR /var/lib/nimbus
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nimbus"]
CMD ["server"]
