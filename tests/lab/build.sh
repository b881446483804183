#!/bin/bash
# What the lab's hosts run, built once for the smoke lab, the two-host lab and the Xen demo:
# Xen 4.17 with the patch series (hypervisor, tools libraries and xl: hvm-patches/build --xl, or
# only the libraries when DEBDIR has Xen's packages), xenft's Xen programs (tests/lab/tools.mk)
# and the Debian dom0 image (tests/lab/rootfs.sh). Every step is incremental, so a second caller in the same
# pipeline finds everything built. Before each step it writes WORKDIR/build.step ("STEP STEPS
# ESTIMATE-S REST-S START-EPOCH WHAT": this step's and the later steps' expected seconds) for a
# progress line (scripts/demo), and prints each step's time.
#
# usage: tests/lab/build.sh WORKDIR [DEBDIR]
# Env: XEN_WORKDIR (default build/xen), XENFT_LIB (default build/main/libxenft.a).
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:?usage: tests/lab/build.sh WORKDIR [DEBDIR]}
debs=${2:-}
mkdir -p "$work"
work=$(cd "$work" && pwd)
xen_work=${XEN_WORKDIR:-$top/build/xen}
xenft_lib=${XENFT_LIB:-$top/build/main/libxenft.a}
start=$(date +%s)
# Each step's expected seconds on this kind of machine (2 cores), cold and with its output
# already there (measured in a cold demo on 2026-12-02: 356, 56 and 226-240 s); estimate[i] is
# the one that applies to this run.
# xl comes from the packages when DEBDIR has Xen's; the libraries are for xenft's Xen programs.
what=--xl
[ -n "$debs" ] && ls "$debs"/xen-utils-4.17_*.deb > /dev/null 2>&1 && what=--libs
built() { [ -e "$1" ] && echo 1 || echo 0; }
cold=(360 60 240) warm=(5 5 15)
have=("$([ -f "$xen_work/hv/xen.gz" ] && [ -x "$xen_work/stage/usr/sbin/xl" ] && echo 1 || echo 0)"
      "$(built "$work/xenft-xen-dm")" "$(built "$work/rootfs.img")")
estimate=()
for i in 0 1 2; do
    if [ "${have[$i]}" = 1 ]; then estimate+=("${warm[$i]}"); else estimate+=("${cold[$i]}"); fi
done
step=0 steps=3
# begin WHAT: announce the next step with its estimate and that of the steps after it
begin() {
    local rest=0 i
    for ((i = step + 1; i < steps; i++)); do rest=$((rest + estimate[i])); done
    t_step=$(date +%s)
    echo "$((step + 1)) $steps ${estimate[$step]} $rest $t_step $1" > "$work/build.step"
    step=$((step + 1))
    echo "lab build: step $step/$steps: $1"
}
done_step() { echo "lab build: step $step/$steps done in $(($(date +%s) - t_step)) s"; }
die() { echo "lab build: $*" >&2; rm -f "$work/build.step"; exit 1; }

begin "Xen 4.17 with xenft's patches: hypervisor, libraries and xl (hvm-patches/build $what)"
"$top/hvm-patches/build" $what "$xen_work" || die "hvm-patches/build $what $xen_work failed"
done_step

[ -f "$xenft_lib" ] || die "no $xenft_lib (./scripts/build first)"
begin "xenft's Xen programs (tests/lab/tools.mk)"
make -s -f "$top/tests/lab/tools.mk" -j"$(nproc)" TOP="$top" XEN_USR="$xen_work/stage/usr" XENFT_LIB="$xenft_lib" \
    OUT="$work" > "$work/tools.log" 2>&1 || { grep -v 'statically linked\|in function' "$work/tools.log" | head -n 30;
                                           die "xenft's Xen programs did not build ($work/tools.log)"; }
done_step

begin "the dom0 image: Debian bookworm with Xen's tools and a kernel (tests/lab/rootfs.sh)"
"$top/tests/lab/rootfs.sh" "$work" $debs || die "tests/lab/rootfs.sh failed"
done_step
rm -f "$work/build.step"
echo "lab build: done in $(($(date +%s) - start)) s"
