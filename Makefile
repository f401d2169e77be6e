# Shortcuts; the scripts under scripts/ are what they run.
.PHONY: build demo test fuzz
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	go build -tags goolm -trimpath -ldflags "-X main.version=$(VERSION)" -o matrix2mqtt ./cmd/matrix2mqtt

demo:
	scripts/demo.sh

test:
	scripts/test.sh

fuzz:
	scripts/fuzz.sh
