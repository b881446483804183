/*
 * lwIP on the test guest's virtio-mmio NIC: the network interface (frames in and out through
 * virtio.c), lwIP's clock (the LAPIC timer's milliseconds) and the poll that feeds received
 * frames to lwIP and runs its timers. lwIP runs with NO_SYS=1: one thread, the service loop,
 * calls it; interrupts only wake that loop. Runs in user mode.
 */
#include "guest.h"

#include "lwip/etharp.h"
#include "lwip/init.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/timeouts.h"
#include "netif/ethernet.h"

static struct netif nic;
static uint8_t nic_mac[6];
static uint64_t frames_dropped;

u32_t sys_now(void) { return (u32_t)uptime_ms(); }

static err_t link_output(struct netif* netif, struct pbuf* p)
{
    (void)netif;
    uint8_t* frame = net_tx_frame();
    if (p->tot_len > NET_MAX_FRAME)
        return ERR_BUF;
    const u16_t len = pbuf_copy_partial(p, frame, p->tot_len, 0);
    return net_tx_commit(len) == 0 ? ERR_OK : ERR_IF;
}

static err_t nic_setup(struct netif* netif)
{
    netif->name[0] = 'v';
    netif->name[1] = 'n';
    netif->hwaddr_len = ETH_HWADDR_LEN;
    memcpy(netif->hwaddr, nic_mac, ETH_HWADDR_LEN);
    netif->mtu = 1500;
    netif->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET | NETIF_FLAG_LINK_UP;
    netif->output = etharp_output;
    netif->linkoutput = link_output;
    return ERR_OK;
}

int stack_init(const uint8_t ip[4])
{
    if (net_init(nic_mac) != 0)
        return -1;
    lwip_init();
    ip4_addr_t addr, mask, gateway;
    IP4_ADDR(&addr, ip[0], ip[1], ip[2], ip[3]);
    IP4_ADDR(&mask, 255, 255, 255, 0);
    ip4_addr_set_zero(&gateway);
    if (!netif_add(&nic, &addr, &mask, &gateway, 0, nic_setup, ethernet_input))
        return -1;
    netif_set_default(&nic);
    netif_set_up(&nic); /* announces the address (gratuitous ARP) */
    return 0;
}

static void deliver(uint8_t* frame, uint32_t len)
{
    struct pbuf* p = pbuf_alloc(PBUF_RAW, (u16_t)len, PBUF_POOL);
    if (!p) { /* out of buffers: dropped like a full NIC would; TCP sends it again */
        ++frames_dropped;
        return;
    }
    pbuf_take(p, frame, (u16_t)len);
    if (nic.input(p, &nic) != ERR_OK)
        pbuf_free(p);
}

int stack_poll(void)
{
    const int frames = net_poll(deliver);
    sys_check_timeouts();
    return frames;
}
