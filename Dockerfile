# syntax=docker/dockerfile:1
# One static dnstune binary for every command (webhook, node tune, node
# monitor, mutate, policy check) on a distroless, non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o /out/dnstune ./cmd/dnstune

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dnstune /usr/local/bin/dnstune
# 65532 = nonroot. The node agent's init container overrides this with
# runAsUser: 0 + privileged, only to write host sysctls.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dnstune"]
