/*
 * virtio-mmio drivers of the test guest (virtio 1.x, split queues of 16 entries), for the
 * network device at 0xfeb01000 and the block device at 0xfeb02000. xenft's device models
 * complete every request inside the exit that submits it (QueueNotify), so after a notify the
 * used ring already holds the answer; interrupts only wake the guest from HLT.
 */
#include "guest.h"

#define QSIZE 16
#define DESC_NEXT 1
#define DESC_WRITE 2

#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_INTERRUPT_STATUS 0x060
#define REG_INTERRUPT_ACK 0x064
#define REG_STATUS 0x070
#define REG_QUEUE_DESC 0x080
#define REG_QUEUE_DRIVER 0x090
#define REG_QUEUE_DEVICE 0x0a0
#define REG_CONFIG 0x100

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8

struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};
struct avail {
    uint16_t flags, idx, ring[QSIZE], used_event;
};
struct used_elem {
    uint32_t id, len;
};
struct used {
    uint16_t flags, idx;
    struct used_elem ring[QSIZE];
    uint16_t avail_event;
};
struct vq {
    struct desc desc[QSIZE] __attribute__((aligned(16)));
    struct avail avail __attribute__((aligned(4)));
    struct used used __attribute__((aligned(8)));
    uint16_t last_used;
};

static void set_addr(uint64_t base, uint32_t reg, const void* p)
{
    mmio_write32(base + reg, (uint32_t)(uint64_t)p);
    mmio_write32(base + reg + 4, (uint32_t)((uint64_t)p >> 32));
}

/* The initialization sequence of virtio 1.x section 3.1.1; 0 on success. */
static int device_init(uint64_t base, uint32_t device_id, uint32_t features, struct vq** queues, int nqueues)
{
    if (mmio_read32(base + REG_MAGIC) != 0x74726976 || mmio_read32(base + REG_VERSION) != 2 ||
        mmio_read32(base + REG_DEVICE_ID) != device_id)
        return -1;
    mmio_write32(base + REG_STATUS, 0);
    mmio_write32(base + REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    mmio_write32(base + REG_DEVICE_FEATURES_SEL, 1);
    if (!(mmio_read32(base + REG_DEVICE_FEATURES) & 1)) /* VIRTIO_F_VERSION_1 */
        return -1;
    mmio_write32(base + REG_DRIVER_FEATURES_SEL, 0);
    mmio_write32(base + REG_DRIVER_FEATURES, features);
    mmio_write32(base + REG_DRIVER_FEATURES_SEL, 1);
    mmio_write32(base + REG_DRIVER_FEATURES, 1);
    mmio_write32(base + REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(mmio_read32(base + REG_STATUS) & STATUS_FEATURES_OK))
        return -1;
    for (int q = 0; q < nqueues; ++q) {
        mmio_write32(base + REG_QUEUE_SEL, (uint32_t)q);
        if (mmio_read32(base + REG_QUEUE_NUM_MAX) < QSIZE)
            return -1;
        mmio_write32(base + REG_QUEUE_NUM, QSIZE);
        set_addr(base, REG_QUEUE_DESC, queues[q]->desc);
        set_addr(base, REG_QUEUE_DRIVER, &queues[q]->avail);
        set_addr(base, REG_QUEUE_DEVICE, &queues[q]->used);
        mmio_write32(base + REG_QUEUE_READY, 1);
    }
    mmio_write32(base + REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    return 0;
}

static void offer(struct vq* q, uint16_t head)
{
    q->avail.ring[q->avail.idx % QSIZE] = head;
    barrier();
    q->avail.idx++;
    barrier();
}

static uint16_t used_idx(struct vq* q)
{
    barrier();
    return *(volatile uint16_t*)&q->used.idx;
}

void virtio_interrupt(uint64_t vector)
{
    const uint64_t base = vector == NET_VECTOR ? VIRTIO_NET_BASE : VIRTIO_BLK_BASE;
    mmio_write32(base + REG_INTERRUPT_ACK, mmio_read32(base + REG_INTERRUPT_STATUS));
}

/* ----- Network ---------------------------------------------------------------------------- */

#define NET_HDR 12
#define NET_BUF 1536 /* >= NET_HDR + NET_MAX_FRAME */

static struct vq net_rx, net_tx;
static uint8_t rx_buffers[QSIZE][NET_BUF];
static uint8_t tx_buffer[NET_BUF];
static int have_net;

int net_init(uint8_t mac[6])
{
    struct vq* queues[2] = {&net_rx, &net_tx};
    if (device_init(VIRTIO_NET_BASE, 1, 1u << 5 /* VIRTIO_NET_F_MAC */, queues, 2) != 0)
        return -1;
    for (int i = 0; i < 6; ++i)
        mac[i] = mmio_read8(VIRTIO_NET_BASE + REG_CONFIG + (uint64_t)i);
    for (uint16_t i = 0; i < QSIZE; ++i) {
        net_rx.desc[i] = (struct desc){(uint64_t)rx_buffers[i], NET_BUF, DESC_WRITE, 0};
        offer(&net_rx, i);
    }
    mmio_write32(VIRTIO_NET_BASE + REG_QUEUE_NOTIFY, 0);
    have_net = 1;
    return 0;
}

uint8_t* net_tx_frame(void) { return tx_buffer + NET_HDR; }

int net_tx_commit(uint32_t len)
{
    if (!have_net || len > NET_MAX_FRAME)
        return -1;
    memset(tx_buffer, 0, NET_HDR);
    net_tx.desc[0] = (struct desc){(uint64_t)tx_buffer, NET_HDR + len, 0, 0};
    offer(&net_tx, 0);
    mmio_write32(VIRTIO_NET_BASE + REG_QUEUE_NOTIFY, 1);
    net_tx.last_used = used_idx(&net_tx); /* completed during the notify */
    return 0;
}

int net_poll(frame_handler handle)
{
    int n = 0;
    if (!have_net)
        return 0;
    while (net_rx.last_used != used_idx(&net_rx)) {
        const struct used_elem e = net_rx.used.ring[net_rx.last_used % QSIZE];
        net_rx.last_used++;
        if (e.id < QSIZE && e.len > NET_HDR && e.len <= NET_BUF)
            handle(rx_buffers[e.id] + NET_HDR, e.len - NET_HDR);
        offer(&net_rx, (uint16_t)(e.id % QSIZE));
        ++n;
    }
    if (n)
        mmio_write32(VIRTIO_NET_BASE + REG_QUEUE_NOTIFY, 0);
    return n;
}

/* ----- Block ------------------------------------------------------------------------------ */

static struct vq blk_q;
static struct {
    uint32_t type, reserved;
    uint64_t sector;
} blk_header;
static volatile uint8_t blk_status;
static int have_blk;

int blk_init(uint64_t* sectors)
{
    struct vq* queues[1] = {&blk_q};
    if (device_init(VIRTIO_BLK_BASE, 2, 0, queues, 1) != 0)
        return -1;
    *sectors = (uint64_t)mmio_read32(VIRTIO_BLK_BASE + REG_CONFIG) |
               ((uint64_t)mmio_read32(VIRTIO_BLK_BASE + REG_CONFIG + 4) << 32);
    have_blk = 1;
    return 0;
}

int blk_io(int write, uint64_t sector, void* buf, uint32_t len)
{
    if (!have_blk)
        return -1;
    blk_header.type = write ? 1 : 0;
    blk_header.reserved = 0;
    blk_header.sector = sector;
    blk_status = 0xff;
    blk_q.desc[0] = (struct desc){(uint64_t)&blk_header, sizeof blk_header, DESC_NEXT, 1};
    blk_q.desc[1] = (struct desc){(uint64_t)buf, len, (uint16_t)(DESC_NEXT | (write ? 0 : DESC_WRITE)), 2};
    blk_q.desc[2] = (struct desc){(uint64_t)&blk_status, 1, DESC_WRITE, 0};
    offer(&blk_q, 0);
    mmio_write32(VIRTIO_BLK_BASE + REG_QUEUE_NOTIFY, 0);
    if (used_idx(&blk_q) == blk_q.last_used)
        return -1; /* not completed in the notify: not xenft's device model */
    blk_q.last_used = used_idx(&blk_q);
    return blk_status == 0 ? 0 : -1;
}
