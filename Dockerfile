# syntax=docker/dockerfile:1
# volboot's image: a small Python base, the static volboot binary and the
# handler. The heavy Python packages and model weights are NOT here: volboot
# installs them onto the network volume at boot (see README.md).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same build as `make build` (static, -trimpath, version stamped);
# integration/dockerfile_test.go keeps the two in step.
RUN make build VERSION=${VERSION}

FROM python:3.11-slim
COPY --from=build /src/bin/volboot /usr/local/bin/volboot
COPY examples/runpod_handler.py /app/handler.py
ENV VOLBOOT_VOLUME=/runpod-volume \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["/usr/local/bin/volboot", "run", "--"]
CMD ["python", "-u", "/app/handler.py"]
