#!/usr/bin/env bash
# Makes the base images that the Dockerfile names (golang:1.26-bookworm, debian:bookworm-slim)
# on a machine that reaches Debian's packages and the Go module proxy but no image registry:
# mmdebstrap builds a bookworm root file system, `docker import` turns it into an image, and
# the build image gets this machine's own Go (/usr/local/go). The Dockerfile stays what a user
# builds with the registry's images.
#
# The build image trusts the certificate authorities this machine trusts (its
# /etc/ssl/certs/ca-certificates.crt), so that `go mod download` in the build reaches the module
# proxy wherever this machine's TLS goes through an intercepting proxy.
#
# The images are slow to make, so they are kept as `docker save` archives under
# ~/.cache/matrix2mqtt/docker-base/<hash> (the hash covers the code that makes the image and the
# Go version) and loaded from there when the Docker engine lacks them. Idempotent; fast when they
# are there.
set -euo pipefail

DEBIAN_IMAGE=debian:bookworm-slim
GO_IMAGE=golang:1.26-bookworm
MIRROR=http://deb.debian.org/debian
GOROOT_HOST=$(go env GOROOT)

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/matrix2mqtt/docker-base"

# have IMAGE: the engine has IMAGE, made by the current code ($key).
have() {
	[[ $(docker image inspect -f '{{index .Config.Labels "matrix2mqtt.base"}}' "$1" 2>/dev/null) == "$key" ]]
}

# ensure IMAGE MAKE: loads IMAGE from the cache, or runs MAKE and saves it there.
ensure() {
	local image=$1 make=$2
	key=$( (declare -f rootfs "$make"; echo "$image $MIRROR"; "$GOROOT_HOST/bin/go" version) | sha256sum | cut -c1-16)
	cache="$cache_root/$key"
	local archive="$cache/image.tar"
	mkdir -p "$cache"
	if have "$image"; then
		return
	fi
	if [[ -s "$archive" ]] && docker load -q -i "$archive" >/dev/null && have "$image"; then
		echo "docker-base-images: loaded $image from $archive"
		return
	fi
	local start=$SECONDS
	"$make"
	docker save -o "$archive.tmp" "$image"
	mv "$archive.tmp" "$archive"
	echo "docker-base-images: made $image in $((SECONDS - start)) s"
}

# rootfs TAR PACKAGES... [OPTIONS...]: a bookworm minbase root file system with PACKAGES, as a
# tarball; arguments from the first one that starts with - on go to mmdebstrap.
rootfs() {
	local tar=$1
	shift
	local packages=() options=()
	for arg in "$@"; do
		if [[ $arg == -* || ${#options[@]} -gt 0 ]]; then
			options+=("$arg")
		else
			packages+=("$arg")
		fi
	done
	local include
	include=$(
		IFS=,
		echo "${packages[*]}"
	)
	mmdebstrap --quiet --variant=minbase --include="$include" "${options[@]}" \
		--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
		bookworm "$tar" "$MIRROR"
}

make_debian() {
	rootfs "$cache/debian.rootfs.tar" passwd
	docker import \
		--change "LABEL matrix2mqtt.base=$key" \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' \
		"$cache/debian.rootfs.tar" "$DEBIAN_IMAGE" >/dev/null
	rm -f "$cache/debian.rootfs.tar"
}

make_golang() {
	local tar="$cache/golang.rootfs.tar"
	rootfs "$tar" passwd ca-certificates gcc libc6-dev git \
		--customize-hook='upload /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt'
	# This machine's Go goes in at /usr/local/go, as in the registry's golang images.
	tar -C "$(dirname "$GOROOT_HOST")" --transform "s,^$(basename "$GOROOT_HOST"),usr/local/go," \
		--exclude='*/pkg/obj' -rf "$tar" "$(basename "$GOROOT_HOST")"
	docker import \
		--change "LABEL matrix2mqtt.base=$key" \
		--change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV GOPATH=/go' \
		--change 'ENV GOTOOLCHAIN=local' \
		--change 'WORKDIR /go' \
		--change 'CMD ["bash"]' \
		"$tar" "$GO_IMAGE" >/dev/null
	rm -f "$tar"
}

ensure "$DEBIAN_IMAGE" make_debian
ensure "$GO_IMAGE" make_golang
