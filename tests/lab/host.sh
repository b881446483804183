# Sourced by the labs (smoke.sh, failover.sh, linux_boot.sh): the QEMU command line of one lab
# host, in one place. A host is Xen with the series under QEMU TCG (nested SVM: QEMU offers no
# VMX), 2 GiB, one CPU, booted with the hypervisor's parameters FT needs (apicv=0) and a dom0 of
# 768 MiB on the lab's image (a snapshot: the image is never written) with a read-only second
# disk for the scenario; Xen's serial console goes to a file, which the labs read.
#
# lab_host WORKDIR SCENARIO-IMAGE SERIAL-LOG DOM0-PARAMETERS [XEN-PARAMETERS]
#   sets the array lab_host_cmd; the caller appends its network devices and runs it.
lab_host() {
    local work=$1 payload=$2 serial=$3 dom0=$4 xen=${5:-bootscrub=false}
    lab_host_cmd=(qemu-system-x86_64 -machine q35,accel=tcg -cpu qemu64,+svm,+npt -smp 1 -m 2048
        -display none -monitor none -no-reboot -serial "file:$serial"
        -kernel "$work/xen"
        -append "console=com1 com1=115200 dom0_mem=768M $xen apicv=0 loglvl=all guest_loglvl=all"
        -initrd "$work/vmlinuz root=/dev/vda console=hvc0 $dom0,$work/initrd.img"
        -drive "file=$work/rootfs.img,if=virtio,format=raw,snapshot=on"
        -drive "file=$payload,if=virtio,format=raw,readonly=on")
}
