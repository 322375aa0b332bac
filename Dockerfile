# syntax=docker/dockerfile:1
# One static dnstune binary for every command (webhook, admission-policy,
# node tune, node monitor, mutate, policy, report, rollout, version) on a
# distroless, non-root base.
FROM golang:1.26 AS build
# The shipped module alone (go.work adds the test module e2e/).
ENV GOWORK=off
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X github.com/dnstune/dnstune/cmd/dnstune/app.Version=${VERSION}" -o /out/dnstune ./cmd/dnstune

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/dnstune/dnstune" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/dnstune /usr/local/bin/dnstune
# 65532 = nonroot. The node agent's init container overrides this with
# runAsUser: 0 + privileged, only to write host sysctls.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/dnstune"]
