#!/usr/bin/env bash
# Build or locate the OpenTelemetry Collector that feeds Foreshock.
#
#   scripts/otelcol.sh build   build it once, then print the binary's path
#   scripts/otelcol.sh path    print the binary's path; exit 1 if it is not built
#
# The OpenTelemetry Collector Builder turns deploy/otelcol-builder.yaml into a
# Go program and compiles it. The builder, Go's module and build caches, the
# generated sources and the binary all live in one folder outside the
# repository, ${FORESHOCK_CACHE:-~/.cache/foreshock}/otelcol-VERSION, so
# removing that folder undoes everything. A build is reused for as long as the
# manifest is byte for byte the one it was built from; then `build` returns at
# once, without Go and without network.
set -euo pipefail

OTELCOL_VERSION=0.165.0
BUILDER_MODULE=go.opentelemetry.io/collector/cmd/builder@v${OTELCOL_VERSION}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="${repo}/deploy/otelcol-builder.yaml"
home="${FORESHOCK_CACHE:-${HOME}/.cache/foreshock}/otelcol-${OTELCOL_VERSION}"
binary="${home}/build/otelcol-foreshock"
mark="${home}/complete"

die() {
    echo "otelcol.sh: $*" >&2
    exit 1
}

manifest_digest() {
    sha256sum "${manifest}" | cut -d' ' -f1
}

is_built() {
    [[ -x "${binary}" && -f "${mark}" && "$(cat "${mark}")" == "$(manifest_digest)" ]]
}

find_go() {
    if [[ -n "${GO:-}" ]]; then
        echo "${GO}"
    elif command -v go >/dev/null; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        die "needs Go: put it on PATH or name it with GO=/path/to/go"
    fi
}

check_go() {
    # The Collector's modules of this release say `go 1.26.0` in their go.mod.
    local version major minor
    version="$("$1" env GOVERSION)"
    IFS=. read -r major minor _ <<<"${version#go}"
    ((major > 1 || (major == 1 && minor >= 26))) ||
        die "needs Go 1.26 or newer for the Collector ${OTELCOL_VERSION}; $1 is ${version}"
}

check_manifest() {
    # The cache folder is named after the script's version; a manifest that
    # pins another release would be built under the wrong name.
    grep -qx "  version: ${OTELCOL_VERSION}" "${manifest}" ||
        die "${manifest} must say 'version: ${OTELCOL_VERSION}' under dist"
}

compile() {
    local go go_bin
    go="$(find_go)"
    go_bin="$(dirname "${go}")"
    check_go "${go}"
    # Only the Go that was found builds: no other toolchain is fetched.
    export GOTOOLCHAIN=local
    export GOMODCACHE="${home}/gomod" GOCACHE="${home}/gocache" GOBIN="${home}/bin"
    # Module files are read-only by default; writable ones let `rm -rf` clean up.
    export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-modcacherw"
    # The builder runs `go` from PATH.
    export PATH="${go_bin}:${PATH}"

    if [[ ! -x "${GOBIN}/builder" ]]; then
        echo "otelcol.sh: installing ${BUILDER_MODULE}" >&2
        "${go}" install "${BUILDER_MODULE}"
    fi
    echo "otelcol.sh: building the Collector into ${home}/build" >&2
    (cd "${home}" && "${GOBIN}/builder" --config "${manifest}") >&2
}

build() {
    check_manifest
    if is_built; then
        echo "${binary}"
        return
    fi

    mkdir -p "${home}"
    # Concurrent builds (two shells, two test sessions) wait for each other.
    exec 9>"${home}/.lock"
    flock 9
    if ! is_built; then
        rm -f "${mark}"
        local started=${SECONDS}
        compile
        manifest_digest >"${mark}"
        echo "otelcol.sh: built in $((SECONDS - started)) s" >&2
    fi
    echo "${binary}"
}

case "${1:-}" in
build) build ;;
path)
    is_built || die "the Collector is not built: run scripts/otelcol.sh build"
    echo "${binary}"
    ;;
*) die "usage: scripts/otelcol.sh build|path" ;;
esac
