# syntax=docker/dockerfile:1
# Build: docker build -t plc .
# Run:   docker run -p 2582:2582 -v plc-data:/data plc
#        (or -e PLC_DB=postgres://… for PostgreSQL)

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/plc ./cmd/plc \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/plc /usr/local/bin/plc
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV PLC_DB=/data/plc.sqlite \
    PLC_LISTEN=:2582
VOLUME /data
EXPOSE 2582
ENTRYPOINT ["/usr/local/bin/plc"]
CMD ["serve"]
