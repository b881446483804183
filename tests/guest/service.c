/*
 * The test guest's service mode (user mode): lwIP on the virtio NIC, answering ping (ICMP
 * echo), the HTTP service of http.c on TCP port 80, and a key-value service on UDP port 7000
 * whose state is persisted to the virtio block device before a reply leaves, so every
 * acknowledged update is durable.
 *
 * UDP request (24 bytes, little-endian):  "XFT1" client:u32 seq:u32 op:u8 key:u8 0:u16 arg:u64
 *   op 1 ADD: key += arg (wrapping); op 2 GET.
 * Reply (32 bytes):                   "XFR1" client:u32 seq:u32 op:u8 key:u8 status:u8 0:u8
 *                                     version:u64 value:u64
 *   status 0 ok, 1 bad request, 2 disk error (nothing applied). version counts the ADDs
 *   applied since the disk was blank, so a client can order every reply into one history.
 * A request repeated with the same (client, seq) gets the same reply and is not applied twice
 * (the last 16 clients are remembered), so clients may retry freely.
 *
 * Disk layout: sectors 0-2 this service's state, from sector 8 the HTTP key-value store.
 */
#include "guest.h"

#include "lwip/pbuf.h"
#include "lwip/udp.h"

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

static int persistent;
static uint64_t requests;

uint64_t udp_requests(void) { return requests; }

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

static void state_init(void)
{
    if (persistent && blk_io(0, 0, &state, sizeof state) == 0 && state.magic == STATE_MAGIC) {
        puts("service: state restored from disk, version ");
        put_dec(state.version);
        puts("\n");
        return;
    }
    memset(&state, 0, sizeof state);
    state.magic = STATE_MAGIC;
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

static void udp_received(void* arg, struct udp_pcb* pcb, struct pbuf* p, const ip_addr_t* from, u16_t port)
{
    (void)arg;
    uint8_t q[24];
    const uint32_t len = p->tot_len;
    pbuf_copy_partial(p, q, sizeof q, 0); /* serve() reads at most len of them */
    pbuf_free(p);
    struct pbuf* reply = pbuf_alloc(PBUF_TRANSPORT, 32, PBUF_RAM);
    if (!reply)
        return; /* the client retries */
    serve(q, len, reply->payload);
    udp_sendto(pcb, reply, from, port);
    pbuf_free(reply);
}

static int parse_ip(const char* s, uint8_t ip[4])
{
    for (int i = 0; i < 4; ++i) {
        unsigned v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4)
            v = v * 10 + (unsigned)(*s++ - '0'), ++digits;
        if (!digits || v > 255 || (i < 3 && *s++ != '.'))
            return -1;
        ip[i] = (uint8_t)v;
    }
    return *s ? -1 : 0;
}

static void report(void)
{
    puts("uptime ");
    put_dec(uptime_ms());
    puts(" ms requests ");
    put_dec(requests);
    puts(" http ");
    put_dec(http_requests());
    puts("\n");
}

void run_service(const char* ip_option)
{
    uint8_t ip[4] = {10, 0, 2, 15};
    if (ip_option[0] && parse_ip(ip_option, ip) != 0)
        puts("xenft test guest: ignoring a malformed ip= option\n");
    uint64_t sectors = 0;
    persistent = blk_init(&sectors) == 0 && sectors >= 3;
    state_init();
    if (stack_init(ip) != 0) {
        puts("service: no network device\n");
    } else {
        struct udp_pcb* pcb = udp_new();
        if (!pcb || udp_bind(pcb, IP_ADDR_ANY, SERVICE_PORT) != ERR_OK)
            guest_panic("cannot bind UDP port 7000");
        udp_recv(pcb, udp_received, 0);
        http_init(persistent, sectors);
        puts("service: udp port 7000, http port 80 on ");
        for (int i = 0; i < 4; ++i) {
            put_dec(ip[i]);
            puts(i < 3 ? "." : persistent ? ", persistent\n" : ", not persistent (no disk)\n");
        }
    }
    uint64_t next_report = 1000;
    for (;;) {
        take_events();
        if (stack_poll() > 0)
            continue; /* more may be waiting */
        background_work();
        if (uptime_ms() >= next_report) {
            report();
            next_report = uptime_ms() + 1000;
        }
        wait_for_event();
    }
}
