# The lab's own programs: xenft's Xen backend compiled against the patched Xen's headers and
# linked with its libraries (hvm-patches/build --xl), the rest of xenft taken from the main
# build's library. Compiling against the patched headers also checks ft_abi.hpp, the copy of the
# FT interface the ordinary build uses, against them. xenftd itself is the ordinary build's (built
# against Debian's libxen-dev), as the package has it. Objects keep their dependencies (-MMD) in OUT/obj, so the smoke lab, the two-host lab
# and the demo share one build and a run rebuilds only what changed.
#
# usage: make -f tests/lab/tools.mk TOP=SRCDIR XEN_USR=STAGE/usr XENFT_LIB=libxenft.a OUT=DIR [-jN]
#   OUT/xenft-ft-probe  record/replay controller, and the log-rate measure (static: dom0 runs it
#                       with Debian's libraries)
#   OUT/xenft-xen-dm    xenft's device models as an ioreq server, and the direct Linux boot (static)
#   OUT/xenft-xen-pair  a protected pair in one or two processes (needs libiscsi: dynamic)
#   OUT/xenft-xen-poke  flips a byte of a domain's memory (a replica made to diverge; static)

CXX ?= g++
WARNINGS = -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wold-style-cast -Werror
CXXFLAGS = -std=gnu++20 -O2 -g $(WARNINGS) -I$(TOP) -isystem $(XEN_USR)/include -MMD -MP
XEN_LIBS = -L$(XEN_USR)/lib -lxenctrl -lxenforeignmemory -lxenevtchn -lxendevicemodel -lxencall -lxentoollog -lxentoolcore
SYS_LIBS = -lssl -lcrypto -lzstd -lpthread -ldl

obj = $(OUT)/obj
# Every object also depends on every xenft header: the dependency files (-MMD) name an object
# as the compiler saw it, which ccache's base_dir makes relative while OUT may be absolute; such
# a mismatch left an object stale after a header changed (a lab's xenft-xen-dm ran with an old
# layout of XenDeviceModel and wrote guest memory at the wrong place). Rebuilding all of them
# on a header change costs seconds with ccache.
headers := $(shell find $(TOP)/xenft $(TOP)/tests/lab -name '*.hpp')
xen_backend = $(addprefix xenft/backends/xen/,xen_handles ioreq_server device_model ft_log ft_domain xen_log dirty_log state_digests \
	linux_boot)
devices = $(addprefix xenft/devices/,devices virtio_mmio virtio_net virtio_blk host_io) xenft/common/log_line

probe_objs = $(addprefix xenft/backends/xen/,xen_handles ft_log xen_log) tests/lab/ft_probe
dm_objs = $(addprefix xenft/backends/xen/,xen_handles ioreq_server device_model linux_boot) $(devices) \
	xenft/engine/linux_image xenft/engine/acpi_tables tests/lab/xen_dm
pair_objs = $(xen_backend) tests/lab/xen_pair
poke_objs = xenft/backends/xen/xen_handles tests/lab/xen_poke

programs = $(OUT)/xenft-ft-probe $(OUT)/xenft-xen-dm $(OUT)/xenft-xen-pair $(OUT)/xenft-xen-poke
all: $(programs)

o = $(patsubst %,$(obj)/%.o,$(1))
$(OUT)/xenft-ft-probe: $(call o,$(probe_objs)) $(XENFT_LIB)
	$(CXX) -o $@ $^ -static $(XEN_LIBS) $(SYS_LIBS)
$(OUT)/xenft-xen-dm: $(call o,$(dm_objs))
	$(CXX) -o $@ $^ -static $(XEN_LIBS) $(SYS_LIBS)
$(OUT)/xenft-xen-poke: $(call o,$(poke_objs))
	$(CXX) -o $@ $^ -static $(XEN_LIBS) $(SYS_LIBS)
# libiscsi's RDMA dependencies have no static archives: this one is dynamic (dom0 has libiscsi7).
$(OUT)/xenft-xen-pair: $(call o,$(pair_objs)) $(XENFT_LIB)
	$(CXX) -o $@ $^ $(XEN_LIBS) -liscsi $(SYS_LIBS)

$(obj)/%.o: $(TOP)/%.cpp $(headers)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -c $< -o $@

-include $(shell find $(obj) -name '*.d' 2> /dev/null)
.PHONY: all
