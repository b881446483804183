/*
 * The test guest's network service: just enough Ethernet, ARP, IPv4 and ICMP echo to be
 * reachable, and a key-value service on UDP port 7000 whose state is persisted to the virtio
 * block device before a reply leaves, so every acknowledged update is durable.
 *
 * Request (24 bytes, little-endian):  "XFT1" client:u32 seq:u32 op:u8 key:u8 0:u16 arg:u64
 *   op 1 ADD: key += arg (wrapping); op 2 GET.
 * Reply (32 bytes):                   "XFR1" client:u32 seq:u32 op:u8 key:u8 status:u8 0:u8
 *                                     version:u64 value:u64
 *   status 0 ok, 1 bad request, 2 disk error (nothing applied). version counts the ADDs
 *   applied since the disk was blank, so a client can order every reply into one history.
 * A request repeated with the same (client, seq) gets the same reply and is not applied twice
 * (the last 16 clients are remembered), so clients may retry freely.
 */
#include "guest.h"

#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define SERVICE_PORT 7000
#define KEYS 64
#define CLIENTS 16
#define STATE_MAGIC 0x3154535446584e58ull /* "XNXFTST1" */

struct client_slot {
    uint32_t client, seq;
    uint8_t op, key, status, pad;
    uint32_t pad2;
    uint64_t version, value;
};

/* Exactly what sectors 0-2 of the disk hold. */
static struct {
    uint64_t magic, version;
    uint64_t values[KEYS];
    struct client_slot clients[CLIENTS];
    uint32_t next_slot;
    uint8_t pad[1536 - 16 - KEYS * 8 - CLIENTS * 32 - 4];
} state __attribute__((aligned(16)));

static uint8_t my_mac[6], my_ip[4];
static int persistent;
static uint64_t requests;
static uint8_t out[1514];

uint64_t service_requests(void) { return requests; }

static uint16_t be16(const uint8_t* p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put_be16(uint8_t* p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static uint32_t le32(const uint8_t* p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t* p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }
static void put_le32(uint8_t* p, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put_le64(uint8_t* p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t checksum(const uint8_t* p, uint32_t len)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i + 1 < len; i += 2)
        sum += be16(p + i);
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

void service_init(const uint8_t mac[6], const uint8_t ip[4], int have_disk)
{
    memcpy(my_mac, mac, 6);
    memcpy(my_ip, ip, 4);
    persistent = have_disk;
    if (persistent && blk_io(0, 0, &state, sizeof state) == 0 && state.magic == STATE_MAGIC) {
        puts("service: state restored from disk, version ");
        put_dec(state.version);
        puts("\n");
        return;
    }
    memset(&state, 0, sizeof state);
    state.magic = STATE_MAGIC;
}

static void reply_arp(const uint8_t* f)
{
    memset(out, 0, 60);
    memcpy(out, f + 22, 6); /* to the sender's hardware address */
    memcpy(out + 6, my_mac, 6);
    put_be16(out + 12, ETH_ARP);
    put_be16(out + 14, 1);      /* Ethernet */
    put_be16(out + 16, ETH_IP); /* IPv4 */
    out[18] = 6, out[19] = 4;
    put_be16(out + 20, 2); /* reply */
    memcpy(out + 22, my_mac, 6);
    memcpy(out + 28, my_ip, 4);
    memcpy(out + 32, f + 22, 10); /* the sender's hardware and protocol address */
    net_send(out, 60);
}

/* Turns the IPv4 packet in `out` (header copied from the request) into the reply. */
static void send_ip_reply(const uint8_t* f, uint32_t ihl, uint32_t payload_len)
{
    memcpy(out, f + 6, 6);
    memcpy(out + 6, my_mac, 6);
    put_be16(out + 12, ETH_IP);
    uint8_t* ip = out + 14;
    ip[0] = 0x45, ip[1] = 0;
    put_be16(ip + 2, (uint16_t)(20 + payload_len));
    put_be16(ip + 4, 0), put_be16(ip + 6, 0x4000); /* don't fragment */
    ip[8] = 64;
    ip[9] = f[14 + 9];
    put_be16(ip + 10, 0);
    memcpy(ip + 12, my_ip, 4);
    memcpy(ip + 16, f + 14 + 12, 4);
    put_be16(ip + 10, checksum(ip, 20));
    (void)ihl;
    uint32_t len = 14 + 20 + payload_len;
    if (len < 60) {
        memset(out + len, 0, 60 - len);
        len = 60;
    }
    net_send(out, len);
}

static struct client_slot* find_client(uint32_t client)
{
    for (int i = 0; i < CLIENTS; ++i)
        if (state.clients[i].client == client && (client != 0 || state.clients[i].seq != 0))
            return &state.clients[i];
    return 0;
}

/* Serves one request into the 32-byte reply r. */
static void serve(const uint8_t* q, uint32_t len, uint8_t* r)
{
    memset(r, 0, 32);
    memcpy(r, "XFR1", 4);
    if (len < 24 || memcmp(q, "XFT1", 4) != 0 || (q[12] != 1 && q[12] != 2) || q[13] >= KEYS) {
        if (len >= 12)
            memcpy(r + 4, q + 4, 8);
        r[14] = 1;
        return;
    }
    const uint32_t client = le32(q + 4), seq = le32(q + 8);
    const uint8_t op = q[12], key = q[13];
    memcpy(r + 4, q + 4, 10);
    struct client_slot* slot = find_client(client);
    if (slot && slot->seq == seq && slot->op == op && slot->key == key) { /* a retry: same answer */
        r[14] = slot->status;
        put_le64(r + 16, slot->version);
        put_le64(r + 24, slot->value);
        return;
    }
    ++requests;
    if (op == 2) {
        put_le64(r + 16, state.version);
        put_le64(r + 24, state.values[key]);
        return;
    }
    const uint64_t old_value = state.values[key], old_version = state.version;
    struct client_slot old_slot = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!slot) {
        slot = &state.clients[state.next_slot % CLIENTS];
        state.next_slot++;
    }
    old_slot = *slot;
    state.values[key] += le64(q + 16);
    state.version++;
    *slot = (struct client_slot){client, seq, op, key, 0, 0, 0, state.version, state.values[key]};
    if (persistent && blk_io(1, 0, &state, sizeof state) != 0) {
        state.values[key] = old_value; /* not durable: not applied */
        state.version = old_version;
        *slot = old_slot;
        r[14] = 2;
        return;
    }
    put_le64(r + 16, state.version);
    put_le64(r + 24, state.values[key]);
}

void service_frame(uint8_t* f, uint32_t len)
{
    if (len < 14)
        return;
    const uint16_t type = be16(f + 12);
    if (type == ETH_ARP) {
        if (len >= 42 && be16(f + 14) == 1 && be16(f + 16) == ETH_IP && be16(f + 20) == 1 && memcmp(f + 38, my_ip, 4) == 0)
            reply_arp(f);
        return;
    }
    if (type != ETH_IP || len < 14 + 20)
        return;
    const uint8_t* ip = f + 14;
    const uint32_t ihl = (uint32_t)(ip[0] & 15) * 4;
    const uint32_t total = be16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || total < ihl || 14 + total > len || memcmp(ip + 16, my_ip, 4) != 0 ||
        (be16(ip + 6) & 0x3fff) != 0 /* fragments */)
        return;
    const uint8_t* l4 = ip + ihl;
    const uint32_t l4_len = total - ihl;
    if (ip[9] == 1 && l4_len >= 8 && l4[0] == 8 && l4_len <= sizeof out - 34) { /* ICMP echo request */
        memcpy(out + 34, l4, l4_len);
        out[34] = 0; /* echo reply */
        put_be16(out + 36, 0);
        put_be16(out + 36, checksum(out + 34, l4_len));
        send_ip_reply(f, ihl, l4_len);
    } else if (ip[9] == 17 && l4_len >= 8 && be16(l4 + 2) == SERVICE_PORT) {
        const uint32_t udp_len = be16(l4 + 4);
        if (udp_len < 8 || udp_len > l4_len)
            return;
        uint8_t* udp = out + 34;
        serve(l4 + 8, udp_len - 8, udp + 8);
        put_be16(udp, SERVICE_PORT);
        memcpy(udp + 2, l4, 2); /* to the client's port */
        put_be16(udp + 4, 8 + 32);
        put_be16(udp + 6, 0); /* no UDP checksum (allowed on IPv4) */
        send_ip_reply(f, ihl, 8 + 32);
    }
}
