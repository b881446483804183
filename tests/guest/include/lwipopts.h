/*
 * lwIP's configuration for the test guest: NO_SYS (no threads, the raw API called from one
 * loop), IPv4 with ARP, ICMP, UDP and TCP on one Ethernet interface (the virtio-mmio NIC).
 * Timers run from sys_now(), the guest's millisecond count of LAPIC timer ticks.
 *
 * Sized for streaming: a 256 KiB send buffer keeps the link busy while xenft holds the
 * guest's frames for the backup's acknowledgement (a few ms), and window scaling lets a
 * client send as much.
 */
#ifndef XENFT_GUEST_LWIPOPTS_H
#define XENFT_GUEST_LWIPOPTS_H

#define NO_SYS 1
#define SYS_LIGHTWEIGHT_PROT 0
#define LWIP_SOCKET 0
#define LWIP_NETCONN 0
#define LWIP_IPV4 1
#define LWIP_IPV6 0
#define LWIP_ARP 1
#define LWIP_ETHERNET 1
#define LWIP_ICMP 1
#define LWIP_UDP 1
#define LWIP_TCP 1
#define LWIP_RAW 0
#define LWIP_DHCP 0
#define LWIP_AUTOIP 0
#define LWIP_IGMP 0
#define LWIP_DNS 0
#define LWIP_STATS 0
#define LWIP_NETIF_TX_SINGLE_PBUF 1
#define IP_REASSEMBLY 0
#define IP_FRAG 0
#define ETHARP_SUPPORT_STATIC_ENTRIES 0

#define MEM_ALIGNMENT 8
#define MEM_SIZE (2 * 1024 * 1024)
#define MEMP_NUM_PBUF 64
#define MEMP_NUM_UDP_PCB 4
#define MEMP_NUM_TCP_PCB 64
#define MEMP_NUM_TCP_PCB_LISTEN 4
#define MEMP_NUM_TCP_SEG 1024
#define PBUF_POOL_SIZE 128
#define PBUF_POOL_BUFSIZE 1536

#define TCP_MSS 1460
#define LWIP_WND_SCALE 1
#define TCP_RCV_SCALE 2
#define TCP_WND (64 * TCP_MSS)
#define TCP_SND_BUF (256 * 1024)
#define TCP_SND_QUEUELEN (4 * TCP_SND_BUF / TCP_MSS)
#define TCP_SNDLOWAT (16 * TCP_MSS) /* lwIP: below 64 KiB - 4 MSS */
#define TCP_OVERSIZE TCP_MSS
#define LWIP_TCP_TIMESTAMPS 0
/* lwIP's TCP timers tick every TCP_TMR_INTERVAL (delayed ACKs) and every second tick (RTO,
 * persist): 50 ms instead of 250 gives a 100 ms retransmission granularity, close to Linux's
 * 200 ms minimum RTO, so a segment lost in a failover is sent again within a fraction of a
 * second rather than after lwIP's usual one to three. */
#define TCP_TMR_INTERVAL 50
#define TCP_QUEUE_OOSEQ 1

#endif
