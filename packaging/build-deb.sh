#!/usr/bin/env bash
# Build the Debian package with the project's own build: a release build with Debian's
# hardening flags (dpkg-buildflags), then CPack. Needs no root.
#
#   packaging/build-deb.sh [OUTDIR]      # OUTDIR (default build-deb/) gets mailkeep_*.deb
#   MK_DEB_BUILD_DIR=/tmp/b packaging/build-deb.sh /tmp/out
#
# It builds only what the package holds (the mailkeep binary and packaging/'s files), in its
# own build directory (default build-deb/, or $MK_DEB_BUILD_DIR), and prints the path of the
# package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
out=${1:-$top/build-deb}
build=${MK_DEB_BUILD_DIR:-$top/build-deb}
mkdir -p "$out"

# The flags a Debian package build uses: -O2, _FORTIFY_SOURCE, stack protector, full RELRO,
# bindnow, PIE. CMake takes CPPFLAGS through CFLAGS.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
ldflags=$(dpkg-buildflags --get LDFLAGS)
# CMAKE_BUILD_TYPE=None: the flags above and nothing else, as Debian's cmake builds do.
# Warnings stay visible but do not fail a package build (the test builds keep -Werror).
CFLAGS=$cflags LDFLAGS=$ldflags cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=None \
	-DCMAKE_INSTALL_PREFIX=/usr -DMK_WERROR=OFF -DMK_SANITIZE=OFF -DMK_FUZZ=OFF >/dev/null
cmake --build "$build" -j"${MK_JOBS:-2}" --target mailkeep mk-packaging-files
(cd "$build" && cpack -G DEB -B "$out" >/dev/null)
deb=$(ls -t "$out"/mailkeep_*.deb | head -1)
echo "$deb"
