#!/usr/bin/env bash
# Install the programs the test suite runs for real, from Debian's packages:
# Prometheus Alertmanager, and Chromium to render incident reports headless.
# Idempotent and quick when they are already there.
#
# The suite starts /usr/bin/prometheus-alertmanager itself, with its own
# configuration, storage and ports, so the Debian service is never needed;
# policy-rc.d keeps the package's scripts from starting it during install.
set -euo pipefail

# Each package, and the program it must leave behind.
declare -A programs=(
    [prometheus-alertmanager]=/usr/bin/prometheus-alertmanager
    [chromium]=/usr/bin/chromium
)
missing=()
for package in "${!programs[@]}"; do
    if [[ ! -x "${programs[${package}]}" ]]; then
        missing+=("${package}")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "${missing[*]} missing and apt-get is not available: install" \
        "Prometheus Alertmanager 0.25 or later at /usr/bin/prometheus-alertmanager" \
        "and Chromium at /usr/bin/chromium" >&2
    exit 1
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
    sudo=(sudo)
fi

# Exit code 101 tells invoke-rc.d not to start the service; the file is put
# back as it was afterwards.
policy=/usr/sbin/policy-rc.d
saved=""
if [[ -e "${policy}" ]]; then
    saved="$(mktemp)"
    "${sudo[@]}" cp -p "${policy}" "${saved}"
fi
restore_policy() {
    if [[ -n "${saved}" ]]; then
        "${sudo[@]}" cp -p "${saved}" "${policy}"
        rm -f "${saved}"
    else
        "${sudo[@]}" rm -f "${policy}"
    fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "${policy}" >/dev/null
"${sudo[@]}" chmod 755 "${policy}"

echo "installing ${missing[*]} from the Debian archive" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

for package in "${missing[@]}"; do
    binary="${programs[${package}]}"
    if [[ ! -x "${binary}" ]]; then
        echo "${package} was installed but ${binary} is not there" >&2
        exit 1
    fi
    "${binary}" --version 2>&1 | head -1 >&2
done
