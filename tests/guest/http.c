/*
 * The test guest's HTTP/1.1 service (TCP port 80, lwIP's raw API), for clients nobody here
 * wrote (curl, wrk, ab):
 *
 *   GET /            a plain-text status page (uptime, request counts, keys stored)
 *   GET /kv/KEY      the value stored under KEY (200), or 404
 *   PUT /kv/KEY      stores the body (at most 896 bytes) under KEY; it is on the disk before
 *                    the response leaves: 201 (new key) or 204 (replaced); 507 when all slots
 *                    are taken, 503 if the disk failed (nothing stored)
 *   GET /stream/N    N bytes (N < 2^40) of a pattern a client can check: 16-byte lines, line
 *                    i being i in decimal, zero-padded to 15 digits, then '\n'; that is,
 *                    `seq -f %015.0f 0 $((N / 16)) | head -c N`
 *
 * KEY is 1-120 characters of [A-Za-z0-9._-]. Connections are kept alive per HTTP/1.1 (closed
 * after the response for "Connection: close" or HTTP/1.0); pipelined requests are answered in
 * order. Malformed requests get 400 and the connection is closed; request heads over 2 KiB
 * 431; chunked bodies 501. Runs in user mode, called from the service loop through lwIP.
 *
 * Disk: slot i of the key-value store is sectors 8 + 2i and 9 + 2i (up to 128 slots), loaded
 * at start, so values survive a restart from the same disk and a failover (the backup replays
 * the same writes; the disk is shared).
 */
#include "guest.h"

#include "lwip/tcp.h"

#define MAX_CONNECTIONS 48
#define REQUEST_MAX 2048 /* head and body of one request */
#define KEY_MAX 120
#define VALUE_MAX 896
#define KV_FIRST_SECTOR 8
#define KV_SLOT_SECTORS 2
#define KV_SLOTS 128
#define KV_MAGIC 0x31564b58u /* "XKV1" */
#define STREAM_MAX (1ull << 40)
#define IDLE_CLOSE_MS 120000
#define POLL_INTERVAL 4 /* lwIP's coarse timer: 2 s */

struct kv_slot {
    uint32_t magic;
    uint16_t key_len, value_len;
    char key[KEY_MAX];
    uint8_t value[VALUE_MAX];
};
_Static_assert(sizeof(struct kv_slot) == KV_SLOT_SECTORS * 512, "a slot is two sectors");

static struct kv_slot kv[KV_SLOTS];
static uint32_t kv_slots; /* usable: as many as the disk holds */
static int kv_persistent;

struct connection {
    struct tcp_pcb* pcb; /* 0: a free slot */
    char in[REQUEST_MAX];
    uint32_t in_len;
    uint64_t stream_next, stream_end; /* the bytes of /stream/N not yet queued */
    int close_when_done;
    uint64_t last_activity_ms;
};

static struct connection connections[MAX_CONNECTIONS];
static uint64_t requests;
static char stream_chunk[16384];

uint64_t http_requests(void) { return requests; }

uint32_t http_keys(void)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < kv_slots; ++i)
        n += kv[i].magic == KV_MAGIC;
    return n;
}

/* ----- Text helpers ------------------------------------------------------------------------ */

struct text {
    char* p;
    uint32_t len, cap;
};

static void add(struct text* t, const char* s, uint32_t n)
{
    if (n > t->cap - t->len)
        n = t->cap - t->len;
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static void add_str(struct text* t, const char* s) { add(t, s, (uint32_t)strlen(s)); }

static void add_dec(struct text* t, uint64_t v)
{
    char buf[20];
    add(t, buf, format_dec(buf, v));
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

/* Case-insensitive: does the line start with the header name (and a colon)? */
static const char* header_value(const char* line, const char* line_end, const char* name)
{
    const char* p = line;
    for (; *name; ++name, ++p)
        if (p >= line_end || lower(*p) != *name)
            return 0;
    if (p >= line_end || *p != ':')
        return 0;
    for (++p; p < line_end && (*p == ' ' || *p == '\t');)
        ++p;
    return p;
}

/* Decimal digits only, no overflow past limit; -1 otherwise. */
static int parse_decimal(const char* p, const char* end, uint64_t limit, uint64_t* out)
{
    uint64_t v = 0;
    if (p >= end)
        return -1;
    for (; p < end; ++p) {
        if (*p < '0' || *p > '9' || v > (limit - (uint64_t)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 0;
}

static int key_valid(const char* key, uint32_t len)
{
    if (len == 0 || len > KEY_MAX)
        return 0;
    for (uint32_t i = 0; i < len; ++i) {
        const char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* ----- The stream's pattern ---------------------------------------------------------------- */

/* Bytes [offset, offset + len) of the stream: line i is i as 15 zero-padded digits and '\n'. */
static void stream_fill(char* out, uint64_t offset, uint32_t len)
{
    char line[16];
    uint64_t i = offset / 16;
    for (int d = 14; d >= 0; --d, i /= 10)
        line[d] = (char)('0' + i % 10);
    line[15] = '\n';
    uint32_t at = (uint32_t)(offset % 16);
    while (len) {
        const uint32_t n = len < 16 - at ? len : 16 - at;
        memcpy(out, line + at, n);
        out += n, len -= n, at = 0;
        for (int d = 14; d >= 0 && ++line[d] > '9'; --d) /* the next line's number */
            line[d] = '0';
    }
}

/* ----- Key-value store --------------------------------------------------------------------- */

static struct kv_slot* kv_find(const char* key, uint32_t len)
{
    for (uint32_t i = 0; i < kv_slots; ++i)
        if (kv[i].magic == KV_MAGIC && kv[i].key_len == len && memcmp(kv[i].key, key, len) == 0)
            return &kv[i];
    return 0;
}

static uint64_t kv_sector(const struct kv_slot* slot) { return KV_FIRST_SECTOR + (uint64_t)(slot - kv) * KV_SLOT_SECTORS; }

/* 201 new, 204 replaced, 507 full, 503 disk error (nothing changed). */
static int kv_put(const char* key, uint32_t key_len, const char* value, uint32_t value_len)
{
    struct kv_slot* slot = kv_find(key, key_len);
    const int replaced = slot != 0;
    for (uint32_t i = 0; !slot && i < kv_slots; ++i)
        if (kv[i].magic != KV_MAGIC)
            slot = &kv[i];
    if (!slot)
        return 507;
    static struct kv_slot next;
    memset(&next, 0, sizeof next);
    next.magic = KV_MAGIC;
    next.key_len = (uint16_t)key_len;
    next.value_len = (uint16_t)value_len;
    memcpy(next.key, key, key_len);
    memcpy(next.value, value, value_len);
    if (kv_persistent && blk_io(1, kv_sector(slot), &next, sizeof next) != 0)
        return 503;
    *slot = next;
    return replaced ? 204 : 201;
}

static void kv_load(uint64_t disk_sectors)
{
    kv_slots = 0;
    if (!kv_persistent) {
        kv_slots = KV_SLOTS; /* in memory only */
        return;
    }
    while (kv_slots < KV_SLOTS && KV_FIRST_SECTOR + (kv_slots + 1) * KV_SLOT_SECTORS <= disk_sectors) {
        struct kv_slot* slot = &kv[kv_slots];
        if (blk_io(0, kv_sector(slot), slot, sizeof *slot) != 0 || slot->magic != KV_MAGIC ||
            !key_valid(slot->key, slot->key_len) || slot->value_len > VALUE_MAX)
            memset(slot, 0, sizeof *slot); /* blank or damaged: free */
        ++kv_slots;
    }
}

/* ----- Connections ------------------------------------------------------------------------- */

/* ERR_ABRT when it had to abort (callbacks must then return ERR_ABRT to lwIP). */
static err_t connection_free(struct connection* c)
{
    err_t result = ERR_OK;
    if (c->pcb) {
        tcp_arg(c->pcb, 0);
        tcp_recv(c->pcb, 0);
        tcp_sent(c->pcb, 0);
        tcp_err(c->pcb, 0);
        tcp_poll(c->pcb, 0, 0);
        if (tcp_close(c->pcb) != ERR_OK) { /* out of memory for the FIN */
            tcp_abort(c->pcb);
            result = ERR_ABRT;
        }
    }
    c->pcb = 0;
    return result;
}

static const char* reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Error";
    }
}

/* Queues the status line, headers and body (content_length may exceed body_len: a stream
 * follows). 0 if lwIP took it all. */
static int respond(struct connection* c, int status, const char* body, uint32_t body_len, uint64_t content_length)
{
    char head[256];
    struct text t = {head, 0, sizeof head};
    add_str(&t, "HTTP/1.1 ");
    add_dec(&t, (uint64_t)status);
    add_str(&t, " ");
    add_str(&t, reason(status));
    add_str(&t, "\r\nServer: xenft-test-guest\r\n");
    if (status == 405)
        add_str(&t, "Allow: GET, PUT\r\n");
    if (status != 204) {
        add_str(&t, "Content-Type: ");
        add_str(&t, status == 200 && content_length > body_len ? "application/octet-stream" : "text/plain");
        add_str(&t, "\r\nContent-Length: ");
        add_dec(&t, content_length);
        add_str(&t, "\r\n");
    }
    add_str(&t, c->close_when_done ? "Connection: close\r\n\r\n" : "\r\n");
    const u8_t more = body_len || content_length > body_len ? TCP_WRITE_FLAG_MORE : 0;
    if (tcp_write(c->pcb, head, (u16_t)t.len, TCP_WRITE_FLAG_COPY | more) != ERR_OK)
        return -1;
    if (body_len && tcp_write(c->pcb, body, (u16_t)body_len, TCP_WRITE_FLAG_COPY) != ERR_OK)
        return -1;
    return 0;
}

static int respond_text(struct connection* c, int status, const char* text)
{
    return respond(c, status, text, (uint32_t)strlen(text), strlen(text));
}

/* Queues as much of the stream as lwIP's send buffer takes. */
static void stream_pump(struct connection* c)
{
    while (c->stream_next < c->stream_end) {
        uint64_t n = c->stream_end - c->stream_next;
        const uint32_t room = tcp_sndbuf(c->pcb);
        if (n > room)
            n = room;
        if (n > sizeof stream_chunk)
            n = sizeof stream_chunk;
        if (n < TCP_MSS && c->stream_end - c->stream_next > n)
            break; /* wait for a segment's worth of room */
        if (tcp_sndqueuelen(c->pcb) + n / TCP_MSS + 2 >= TCP_SND_QUEUELEN)
            break;
        stream_fill(stream_chunk, c->stream_next, (uint32_t)n);
        const u8_t more = c->stream_next + n < c->stream_end ? TCP_WRITE_FLAG_MORE : 0;
        if (tcp_write(c->pcb, stream_chunk, (u16_t)n, TCP_WRITE_FLAG_COPY | more) != ERR_OK)
            break; /* out of memory: again when something is acknowledged */
        c->stream_next += n;
    }
}

/* One request: method, target and body already delimited. */
static int serve(struct connection* c, const char* method, uint32_t method_len, const char* target, uint32_t target_len,
                 const char* body, uint32_t body_len)
{
    ++requests;
    const int get = method_len == 3 && memcmp(method, "GET", 3) == 0;
    const int put = method_len == 3 && memcmp(method, "PUT", 3) == 0;
    const char* target_end = target + target_len;

    if (target_len == 1 && target[0] == '/') {
        if (!get)
            return respond_text(c, 405, "GET or PUT only\n");
        static char page[512];
        struct text t = {page, 0, sizeof page};
        add_str(&t, "xenft test guest\nuptime_ms ");
        add_dec(&t, uptime_ms());
        add_str(&t, "\nhttp_requests ");
        add_dec(&t, requests);
        add_str(&t, "\nudp_requests ");
        add_dec(&t, udp_requests());
        add_str(&t, "\nkeys ");
        add_dec(&t, http_keys());
        add_str(&t, " of ");
        add_dec(&t, kv_slots);
        add_str(&t, kv_persistent ? "\npersistent yes\n" : "\npersistent no\n");
        return respond(c, 200, page, t.len, t.len);
    }
    if (target_len > 4 && memcmp(target, "/kv/", 4) == 0) {
        const char* key = target + 4;
        const uint32_t key_len = target_len - 4;
        if (!key_valid(key, key_len))
            return respond_text(c, 400, "a key is 1-120 characters of A-Z a-z 0-9 . _ -\n");
        if (get) {
            const struct kv_slot* slot = kv_find(key, key_len);
            if (!slot)
                return respond_text(c, 404, "no such key\n");
            return respond(c, 200, (const char*)slot->value, slot->value_len, slot->value_len);
        }
        if (!put)
            return respond_text(c, 405, "GET or PUT only\n");
        if (body_len > VALUE_MAX)
            return respond_text(c, 413, "a value is at most 896 bytes\n");
        const int status = kv_put(key, key_len, body, body_len);
        if (status == 201)
            return respond_text(c, 201, "created\n");
        if (status == 204)
            return respond(c, 204, 0, 0, 0);
        return respond_text(c, status, status == 507 ? "the store is full\n" : "disk write failed: not stored\n");
    }
    if (target_len > 8 && memcmp(target, "/stream/", 8) == 0) {
        uint64_t n;
        if (parse_decimal(target + 8, target_end, STREAM_MAX - 1, &n) != 0)
            return respond_text(c, 400, "/stream/N: N is a byte count below 2^40\n");
        if (!get)
            return respond_text(c, 405, "GET or PUT only\n");
        c->stream_next = 0;
        c->stream_end = n;
        if (respond(c, 200, 0, 0, n) != 0)
            return -1;
        stream_pump(c);
        return 0;
    }
    return respond_text(c, 404, "GET /, GET|PUT /kv/KEY, GET /stream/N\n");
}

/* Answers every complete request in the input buffer, in order, while nothing is streaming
 * and the send buffer has room for a response. */
static err_t serve_pending(struct connection* c)
{
    while (c->pcb && c->stream_next >= c->stream_end && !c->close_when_done && c->in_len) {
        if (tcp_sndbuf(c->pcb) < REQUEST_MAX || tcp_sndqueuelen(c->pcb) + 8 >= TCP_SND_QUEUELEN)
            return ERR_OK; /* again when something is acknowledged */
        uint32_t head_len = 0;
        for (uint32_t i = 3; i < c->in_len; ++i)
            if (memcmp(c->in + i - 3, "\r\n\r\n", 4) == 0) {
                head_len = i + 1;
                break;
            }
        if (!head_len) {
            if (c->in_len == sizeof c->in) {
                c->close_when_done = 1;
                respond_text(c, 431, "the request head is over 2 KiB\n");
            }
            return ERR_OK;
        }
        /* The request line, METHOD SP TARGET SP HTTP/1.x, then the headers that matter:
         * Content-Length, Connection and Transfer-Encoding. */
        const char* line_end = c->in;
        while (*line_end != '\r')
            ++line_end;
        const char* method = c->in;
        const char* sp1 = method;
        while (sp1 < line_end && *sp1 != ' ')
            ++sp1;
        const char* target = sp1 + 1;
        const char* sp2 = target;
        while (sp2 < line_end && *sp2 != ' ')
            ++sp2;
        const int http10 = sp2 + 9 == line_end && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;
        const int http11 = sp2 + 9 == line_end && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0;
        uint64_t content_length = 0;
        int bad = (!http10 && !http11) || sp1 == method || sp2 == target, chunked = 0, close = http10;
        for (const char* line = line_end + 2; line < c->in + head_len - 2;) {
            const char* e = line;
            while (*e != '\r')
                ++e;
            const char* v;
            if ((v = header_value(line, e, "content-length")))
                bad |= parse_decimal(v, e, STREAM_MAX, &content_length) != 0;
            else if ((v = header_value(line, e, "transfer-encoding")))
                chunked = 1;
            else if ((v = header_value(line, e, "connection")))
                close = http10 ? !(e - v == 10 && lower(v[0]) == 'k') : e - v == 5 && lower(v[0]) == 'c';
            line = e + 2;
        }
        if (bad || chunked) {
            c->close_when_done = 1;
            respond_text(c, bad ? 400 : 501, bad ? "malformed request\n" : "chunked bodies are not supported\n");
            return ERR_OK;
        }
        if (head_len + content_length > sizeof c->in) {
            c->close_when_done = 1;
            respond_text(c, 413, "the request is over 2 KiB\n");
            return ERR_OK;
        }
        if (head_len + content_length > c->in_len)
            return ERR_OK; /* the body is still coming */
        const uint32_t used = head_len + (uint32_t)content_length;
        c->close_when_done = close;
        if (serve(c, method, (uint32_t)(sp1 - method), target, (uint32_t)(sp2 - target), c->in + head_len,
                  (uint32_t)content_length) != 0) {
            tcp_abort(c->pcb); /* no memory for the response: reset rather than hang */
            c->pcb = 0;
            return ERR_ABRT;
        }
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
    return ERR_OK;
}

/* After queueing: send now, and close once a final response is all queued. */
static err_t flush(struct connection* c, err_t so_far)
{
    if (so_far != ERR_OK || !c->pcb)
        return so_far;
    tcp_output(c->pcb);
    if (c->close_when_done && c->stream_next >= c->stream_end)
        return connection_free(c); /* lwIP sends what is queued, then FIN */
    return ERR_OK;
}

static err_t on_sent(void* arg, struct tcp_pcb* pcb, u16_t len)
{
    (void)pcb, (void)len;
    struct connection* c = arg;
    c->last_activity_ms = uptime_ms();
    stream_pump(c);
    return flush(c, serve_pending(c));
}

static err_t on_receive(void* arg, struct tcp_pcb* pcb, struct pbuf* p, err_t err)
{
    struct connection* c = arg;
    if (!p || err != ERR_OK) { /* the client closed its side */
        if (p)
            pbuf_free(p);
        return connection_free(c);
    }
    c->last_activity_ms = uptime_ms();
    const uint32_t room = sizeof c->in - c->in_len;
    const uint32_t n = p->tot_len < room ? p->tot_len : room;
    pbuf_copy_partial(p, c->in + c->in_len, (u16_t)n, 0);
    c->in_len += n;
    tcp_recved(pcb, p->tot_len);
    const int overflow = n < p->tot_len;
    pbuf_free(p);
    err_t result = serve_pending(c); /* a full buffer without a whole head: 431 */
    if (result == ERR_OK && c->pcb && overflow && !c->close_when_done) {
        /* More than a request's worth unanswered, some of it dropped: answer what came whole
         * (a stream finishes), then close. */
        c->close_when_done = 1;
        if (c->stream_next >= c->stream_end)
            respond_text(c, 413, "too much unanswered input\n");
    }
    return flush(c, result);
}

static void on_error(void* arg, err_t err)
{
    (void)err;
    struct connection* c = arg;
    c->pcb = 0; /* lwIP has freed it */
}

static err_t on_poll(void* arg, struct tcp_pcb* pcb)
{
    (void)pcb;
    struct connection* c = arg;
    if (c->stream_next >= c->stream_end && tcp_sndqueuelen(c->pcb) == 0 &&
        uptime_ms() - c->last_activity_ms > IDLE_CLOSE_MS)
        return connection_free(c);
    stream_pump(c); /* in case a write failed with nothing in flight to call on_sent */
    return flush(c, serve_pending(c));
}

static err_t on_accept(void* arg, struct tcp_pcb* pcb, err_t err)
{
    (void)arg;
    if (err != ERR_OK || !pcb)
        return ERR_VAL;
    struct connection* c = 0;
    for (int i = 0; i < MAX_CONNECTIONS && !c; ++i)
        if (!connections[i].pcb)
            c = &connections[i];
    if (!c) {
        tcp_abort(pcb); /* all slots taken: the client sees a reset */
        return ERR_ABRT;
    }
    c->pcb = pcb;
    c->in_len = 0;
    c->stream_next = c->stream_end = 0;
    c->close_when_done = 0;
    c->last_activity_ms = uptime_ms();
    tcp_arg(pcb, c);
    tcp_recv(pcb, on_receive);
    tcp_sent(pcb, on_sent);
    tcp_err(pcb, on_error);
    tcp_poll(pcb, on_poll, POLL_INTERVAL);
    tcp_nagle_disable(pcb); /* responses are whole: send them at once */
    return ERR_OK;
}

void http_init(int have_disk, uint64_t disk_sectors)
{
    kv_persistent = have_disk;
    kv_load(disk_sectors);
    struct tcp_pcb* pcb = tcp_new();
    if (!pcb || tcp_bind(pcb, IP_ADDR_ANY, HTTP_PORT) != ERR_OK)
        guest_panic("cannot bind TCP port 80");
    pcb = tcp_listen(pcb);
    if (!pcb)
        guest_panic("cannot listen on TCP port 80");
    tcp_accept(pcb, on_accept);
}
