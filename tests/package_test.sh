#!/bin/bash
# The Debian package as an administrator meets it: build it from the repository's files with
# dpkg-buildpackage, check it with lintian (no error or warning at the default level beyond
# the justified overrides in debian/), install it with apt-get on this machine, use what it
# installed (xenft --version, the man pages, the systemd units through systemd-analyze verify,
# the example configuration, the xl glue), then purge it and check that nothing it put on the
# machine is left. Needs root and the build dependencies (scripts/install-deps).
#
# usage: tests/package_test.sh [OUTDIR]   (default build/package)
# Writes OUTDIR/package_test.cases ("PASS name" / "FAIL name: why") and OUTDIR/package_test.trs
# for tests/summarize.py; exits 1 if a case failed.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build/package}
cases=$out/package_test.cases
rm -rf "$out"
mkdir -p "$out/src"
out=$(cd "$out" && pwd) # apt-get takes a .deb only by a path with a slash in front
: > "$cases"
failed=0
start=$(date +%s)

pass() { echo "PASS $1" | tee -a "$cases"; }
fail() { echo "FAIL $1: $2" | tee -a "$cases"; failed=1; }
# name, then a command that must succeed; its output goes to OUTDIR/NAME.out
check() {
    local name=$1; shift
    if "$@" > "$out/$name.out" 2>&1; then pass "$name"; else fail "$name" "$(tail -n 5 "$out/$name.out" | tr '\n' ' ')"; fi
}
finish() {
    local p f
    p=$(grep -c '^PASS' "$cases"); f=$(grep -c '^FAIL' "$cases")
    echo "package test: $p passed, $f failed in $(($(date +%s) - start)) s"
    printf ':test-result: %s\n' "$([ "$failed" -eq 0 ] && echo PASS || echo FAIL)" > "$out/package_test.trs"
    exit "$failed"
}

if [ "$(id -u)" -ne 0 ]; then
    fail package_test "needs root (it installs and purges the package)"; finish
fi
if dpkg-query -W -f='${Status}' xenft 2>/dev/null | grep -q installed; then
    fail package_test "xenft is already installed on this machine; purge it first (apt-get purge xenft)"; finish
fi

# --- build ----------------------------------------------------------------------------------
# From the files git knows (tracked, or new and not ignored), so build trees never leak in.
(cd "$top" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf -) | tar -C "$out/src" -xf -
build_start=$(date +%s)
check package_builds bash -c "cd '$out/src' && DEB_BUILD_OPTIONS='nocheck parallel=$(nproc)' dpkg-buildpackage -us -uc -b"
echo "package build: $(($(date +%s) - build_start)) s"
deb=$(ls "$out"/xenft_*_amd64.deb 2>/dev/null | head -n 1)
if [ -z "$deb" ]; then
    tail -n 40 "$out/package_builds.out"; finish
fi
version=$(dpkg-deb -f "$deb" Version)
upstream=${version%-*}

# --- lintian ----------------------------------------------------------------------------------
lintian_clean() {
    lintian --fail-on error,warning "$out"/xenft_*_amd64.changes
}
check lintian_clean_at_the_default_level lintian_clean
echo "lintian output:"; sed 's/^/    /' "$out/lintian_clean_at_the_default_level.out"

# --- install and use --------------------------------------------------------------------------
# Everything outside dpkg's and apt's own bookkeeping, to compare after the purge.
snapshot() {
    find /etc /usr /lib /var/lib /var/cache /run -xdev \
        \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache/apt -o -path /var/cache/man \
           -o -path /var/cache/debconf -o -path /run/systemd \) -prune -o -print |
        sort
}
snapshot > "$out/before.list"
check package_installs env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$deb"

versions_agree() {
    test "$(xenft --version)" = "$(xenftd --version)" && xenft --version | grep -qF "$upstream"
}
check version_is_the_package_version versions_agree

# The Xen backend is in the package's xenftd, linked with Debian's own Xen libraries; the patched
# hypervisor and xl are what it recommends (Debian's Xen packages with the series, +xenft1).
xen_backend_packaged() {
    xenftd --version | grep -q 'backends: kvm, xen' || { echo "xenftd --version: $(xenftd --version)"; return 1; }
    local depends recommends
    depends=$(dpkg-query -W -f '${Depends}' xenft) recommends=$(dpkg-query -W -f '${Recommends}' xenft)
    echo "$depends" | grep -q 'libxenmisc4.17' && echo "$depends" | grep -q 'libxencall1' ||
        { echo "Depends lacks Debian's Xen libraries: $depends"; return 1; }
    # Any Xen 4.17 of bookworm satisfies them, the patched packages included (debian/shlibs.local),
    # not only the version on the machine that built the package.
    local minimum
    for minimum in $(echo "$depends" | grep -o 'libxen[a-z0-9.]* (>= [^)]*)' | sed 's/.*>= \(.*\))/\1/'); do
        dpkg --compare-versions 4.17.5+72-g01140da4e8-1+xenft1 ge "$minimum" ||
            { echo "Depends wants a Xen newer than the patched packages (4.17.5+72-g01140da4e8-1+xenft1): $depends"; return 1; }
    done
    echo "$recommends" | grep -q 'xen-hypervisor-4.17-amd64 (>= [^)]*+xenft1)' ||
        { echo "Recommends lacks the patched hypervisor: $recommends"; return 1; }
}
check xenftd_has_the_xen_backend xen_backend_packaged

man_pages() {
    local page
    for page in "8 xenft" "8 xenftd" "5 xenft.conf"; do
        # shellcheck disable=SC2086
        MANWIDTH=100 man -P cat $page > "$out/man.txt" 2> /dev/null || { echo "man $page failed"; return 1; }
        grep -q "^NAME" "$out/man.txt" || { echo "man $page has no NAME section"; return 1; }
    done
    MANWIDTH=100 man -P cat xenftd | grep -q "XL INTEGRATION"
}
check man_pages_render man_pages

units_verify() {
    systemd-analyze verify /lib/systemd/system/xenftd.service &&
    cp /lib/systemd/system/xenftd@.service "$out/xenftd@web.service" &&
    systemd-analyze verify "$out/xenftd@web.service"
}
check systemd_units_verify units_verify

unit_enabled_not_started() {
    # dh_installsystemd enables xenftd.service (it waits for /etc/xenft/xenft.conf) and starts
    # nothing: a package install must not touch a running pair.
    test -L /etc/systemd/system/multi-user.target.wants/xenftd.service &&
    ! test -e /run/xenft/vm-7.sock
}
check xenftd_service_enabled_nothing_started unit_enabled_not_started

example_checks() {
    # The example as installed names files an administrator makes first (xenft.conf(5)): the
    # check says which, with their lines, and that nothing was started.
    ! xenftd --config /etc/xenft/xenft.conf.example --check-config 2> "$out/example.e" &&
    grep -q 'xenft.conf.example:[0-9]*: heartbeat.key-file: .*heartbeat.key' "$out/example.e" &&
    grep -q 'xenft.conf.example:[0-9]*: channel.*hosta' "$out/example.e" &&
    grep -q 'problems; nothing was started$' "$out/example.e"
}
check example_configuration_names_the_files_to_make example_checks

tls_private() {
    test "$(stat -c %a /etc/xenft/tls)" = 700
}
check tls_directory_is_private tls_private

hook_names_missing_configuration() {
    local msg
    msg=$(/usr/libexec/xenft/xl-hook start web 3 web 2>&1)
    test $? -eq 1 && test "$msg" = 'xenft: domain web (id 3): ft="web" but /etc/xenft/web.conf does not exist (see xenft.conf(5))'
}
check xl_hook_names_a_missing_configuration hook_names_missing_configuration

guest_is_a_pvh_image() {
    readelf -n /usr/lib/xenft/xenft-guest.elf | grep -q '^ *Xen '
}
check guest_image_has_its_pvh_note guest_is_a_pvh_image

# --- purge --------------------------------------------------------------------------------------
check package_purges env DEBIAN_FRONTEND=noninteractive apt-get purge -y xenft
nothing_left() {
    ! dpkg-query -W -f='${Status}\n' xenft 2>/dev/null | grep -qv not-installed &&
    snapshot > "$out/after.list" &&
    diff "$out/before.list" "$out/after.list"
}
check purge_leaves_nothing_behind nothing_left
finish
