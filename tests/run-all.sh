#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: install what is missing, build twice
# (normal, and AddressSanitizer + UndefinedBehaviorSanitizer), run every test in both builds.
# This is the README's test command and exactly what .ci/run runs.
#
#   tests/run-all.sh            # both builds
#   MK_BUILDS=normal tests/run-all.sh    # only one of: normal sanitize
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

# Build and test dependencies, all from Debian's packages.
packages=(
	build-essential cmake pkg-config clang clang-format
	libuv1-dev libgnutls28-dev gnutls-bin libpam0g-dev libcmocka-dev zlib1g-dev libunistring-dev
	libpam-wrapper libpam-modules libpam-pwdfile python3 curl isync fetchmail getmail6 procps
	lintian file systemd groff-base ssl-cert mutt
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "== installing: ${missing[*]}"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc 2>/dev/null || echo 2)
status=0
for build in ${MK_BUILDS:-normal sanitize}; do
	dir="$top/build-ci-$build"
	opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMK_WERROR=ON)
	[ "$build" = sanitize ] && opts=(-DCMAKE_BUILD_TYPE=Debug -DMK_WERROR=ON -DMK_SANITIZE=ON)
	echo "== $build build"
	cmake -S "$top" -B "$dir" "${opts[@]}" >/dev/null
	cmake --build "$dir" -j"$jobs"
	echo "== $build tests"
	if [ "$(id -u)" -eq 0 ]; then
		# Tests never need root: as root (CI), run them as nobody; only the tests named
		# *_root (privilege drop checks) run as root.
		chown -R nobody "$dir"
		if ! (cd "$dir" && runuser -u nobody -- env HOME=/tmp \
			ctest -j"$jobs" --output-on-failure --timeout 600 -E '_root$'); then
			status=1
		fi
		if ! (cd "$dir" && ctest --output-on-failure --timeout 600 -R '_root$' \
			--no-tests=ignore -O "$dir/root-tests.log"); then
			status=1
		fi
	elif ! (cd "$dir" && ctest -j"$jobs" --output-on-failure --timeout 600); then
		status=1
	fi
done
exit $status
