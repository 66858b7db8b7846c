/*
 * loadgen: closed-loop WebSocket pub/sub load generator for the shardchat load benchmarks.
 *
 * Opens R rooms x M members connections to 127.0.0.1, does the WebSocket handshake itself,
 * (shardchat protocol: waits for `hello`, sends `join`, waits for `joined`), then lets S senders
 * per room (members 0..S-1) publish 128 B messages in a closed loop: each sender keeps W
 * messages in flight and sends its next one when one of its own comes back to it. Every
 * message carries the generator's CLOCK_MONOTONIC ns, the sender id and a per-sender counter,
 * so every receiver computes end-to-end latency and checks per-sender order (gaps, repeats).
 *
 * Phases: connect -> join -> warmup -> measure (window) -> drain (no new sends; wait until
 * everything sent came back to every member, bounded) -> close. Only the window is timed.
 * Server CPU (utime+stime of the process and of each of its threads, /proc/PID/task) and
 * per-core busy time (/proc/stat) are sampled at the window's edges; the generator's own CPU
 * comes from getrusage. Results: one JSON object on stdout; progress on stderr.
 *
 * Wire details: client frames are masked (RFC 6455) with a fixed key; frames are precomputed
 * per sender and only the changing 16 bytes (counter, timestamp) are re-masked per message.
 * Server frames are parsed minimally: binary frames; for shardchat the top-level MessagePack
 * map's keys are walked (t, seq, body, code) and everything else skipped.
 *
 * Build: cc -O2 -pthread -o build/loadgen loadgen.c   (see build.sh)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PROTO_PLAIN 0
#define PROTO_SHARDCHAT 1
#define PROTO_SOCKETIO 2

enum { ST_CONNECTING, ST_HANDSHAKE, ST_HELLO, ST_JOINING, ST_READY, ST_CLOSED };
enum { PH_SETUP, PH_RUN, PH_DRAIN, PH_DONE };

#define MAGIC0 'S'
#define MAGIC1 'C'
#define MAGIC2 'B'
#define MAGIC3 '1'
/* Body layout (little endian): 0 magic[4], 4 sender gid u32, 8 counter u32, 12 pad u32, 16 ts ns u64, then padding. */
#define BODY_MIN 24

static size_t WBUF_CAP = 256 * 1024;
static size_t RBUF_START = 64 * 1024;
#define MAX_CLOSE_CODES 16

/* Latency histogram: 1 us buckets below 100 ms, then 1 ms buckets up to 100 s, then overflow. */
#define H_FINE 100000
#define H_COARSE 100000
#define H_SIZE (H_FINE + H_COARSE + 1)

typedef struct {
  uint64_t delivered, sent, pub_errors, acks, presence, hello, joined_frames, unknown, text_frames, pings;
  uint64_t err_overloaded, err_rate_limited, err_shutting_down, err_other;
  uint64_t gaps, repeats, wrong_room, seq_gaps, bad_frames, closed, conn_failures;
  uint64_t win_delivered, win_sent, win_errors, win_reads, win_read_bytes;
  uint64_t lat_sum_ns, lat_max_ns, lat_count;
  uint64_t skipped, win_skipped, cycles, win_cycles, stalled_delivered, acks_stalled, sio_opens, stalled_closed;
  int close_code[MAX_CLOSE_CODES];
  uint64_t close_count[MAX_CLOSE_CODES];
  int n_close_codes;
} counters_t;

struct thread;

typedef struct conn {
  int fd;
  int state;
  int idx;
  int room, member, sender; /* sender: index in room, or -1 */
  uint32_t gid;             /* room * S + sender */
  uint32_t next_ctr;
  int inflight;
  uint64_t retry_at_ns;
  int retry_pending;
  uint32_t *expect; /* per sender of my room: next counter expected */
  uint64_t last_seq;
  uint8_t *rbuf;
  size_t rlen, rcap;
  uint8_t *wbuf;
  size_t wlen, woff;
  int want_out;
  uint8_t *frame;      /* precomputed masked pub frame (senders) */
  size_t frame_len;
  size_t ctr_off;      /* offset in frame of body byte 8 (counter) */
  uint8_t *plain_body; /* unmasked copy of the 16 changing bytes' context */
  int stalled;          /* --stall: this member stops reading during the run */
  int recycle;          /* --churn: close and reconnect after this event */
  uint64_t next_send_ns; /* --rate: when this sender sends next */
  uint64_t cycle_t0;    /* --churn: when this connection attempt started */
  struct thread *t;
} conn_t;

typedef struct thread {
  int id;
  pthread_t th;
  int ep;
  conn_t **conns;
  int nconns;
  int n_open, n_ready, n_failed;
  long inflight_total; /* written by its thread */
  counters_t c;
  uint32_t *hist;
} thread_t;

/* ---- configuration ---- */
static int cfg_proto = PROTO_SHARDCHAT;
static const char *cfg_host = "127.0.0.1";
static int cfg_port = 0;
/* Cross-node runs (native-bench/cluster): members with an odd index connect to this port instead. */
static int cfg_port2 = 0;
static int cfg_rooms = 10, cfg_members = 100, cfg_senders = 10, cfg_size = 128, cfg_window = 8, cfg_threads = 1;
static double cfg_warmup = 2.0, cfg_duration = 5.0, cfg_drain = 5.0, cfg_setup_timeout = 30.0;
static int cfg_connect_inflight = 200;
static int cfg_server_pid = 0;
static const char *cfg_path = "/ws";
static const char *cfg_cores = "";
static double cfg_rate = 0;      /* open loop: messages sent per second, all senders together (0: closed loop) */
static double cfg_idle_hold = 0; /* idle: no sends; hold the connections this long after setup and sample the server's RSS */
static int cfg_churn = 0;        /* churn: every connection closes as soon as it is ready and reconnects */
static int cfg_stall = 0;        /* stall: the last member of rooms 0..N-1 stops reading during the run */

static volatile int g_phase = PH_SETUP;
static double g_interval_ns = 1e9; /* open loop: ns between two sends of one sender */
static volatile int g_measuring = 0;
static int g_total_conns;
static thread_t *g_threads;
static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *m) {
  fprintf(stderr, "loadgen: %s: %s\n", m, strerror(errno));
  exit(3);
}

static int ld_phase(void) { return __atomic_load_n(&g_phase, __ATOMIC_ACQUIRE); }
static void st_phase(int p) { __atomic_store_n(&g_phase, p, __ATOMIC_RELEASE); }
static int ld_meas(void) { return __atomic_load_n(&g_measuring, __ATOMIC_RELAXED); }
/* Owner-thread-only counters, read by the coordinator: relaxed atomic stores make that well defined. */
#define INC(x, n) __atomic_store_n(&(x), (x) + (n), __ATOMIC_RELAXED)
#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* At most 20 diagnostic lines on stderr per run. */
static int g_notes = 0;
static int note_ok(void) { return __atomic_fetch_add(&g_notes, 1, __ATOMIC_RELAXED) < 20; }

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- output buffer ---- */
static void flush_out(conn_t *c);

static void out_append(conn_t *c, const uint8_t *p, size_t n) {
  if (c->state == ST_CLOSED) return;
  if (c->woff > 0 && c->wlen + n > WBUF_CAP) {
    memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
    c->wlen -= c->woff;
    c->woff = 0;
  }
  if (c->wlen + n > WBUF_CAP) {
    fprintf(stderr, "loadgen: conn %d output buffer full (server not reading?)\n", c->idx);
    exit(4);
  }
  memcpy(c->wbuf + c->wlen, p, n);
  c->wlen += n;
}

/* A masked client frame with opcode op and payload p[0..n). */
static size_t make_frame(uint8_t *dst, int op, const uint8_t *p, size_t n) {
  size_t h = 0;
  dst[h++] = (uint8_t)(0x80 | op);
  if (n < 126) dst[h++] = (uint8_t)(0x80 | n);
  else if (n < 65536) { dst[h++] = 0x80 | 126; dst[h++] = (uint8_t)(n >> 8); dst[h++] = (uint8_t)n; }
  else { dst[h++] = 0x80 | 127; for (int i = 7; i >= 0; i--) dst[h++] = (uint8_t)((uint64_t)n >> (8 * i)); }
  memcpy(dst + h, MASK, 4);
  h += 4;
  for (size_t i = 0; i < n; i++) dst[h + i] = p[i] ^ MASK[i & 3];
  return h + n;
}

static size_t mp_str(uint8_t *d, const char *s) {
  size_t n = strlen(s);
  d[0] = (uint8_t)(0xa0 | n);
  memcpy(d + 1, s, n);
  return n + 1;
}

static void room_name(char *dst, int room) { sprintf(dst, "r%d", room); }

/* Builds a sender's pub frame; remembers where body byte 8 sits inside the masked frame. */
static void build_frame(conn_t *c) {
  uint8_t payload[512];
  size_t n = 0, body_at;
  uint8_t body[4096];
  memset(body, 'x', (size_t)cfg_size);
  body[0] = MAGIC0; body[1] = MAGIC1; body[2] = MAGIC2; body[3] = MAGIC3;
  put_u32(body + 4, c->gid);
  put_u32(body + 8, 0);
  put_u32(body + 12, 0);
  put_u64(body + 16, 0);
  uint8_t *pl = cfg_size + 64 <= (int)sizeof payload ? payload : malloc((size_t)cfg_size + 64);
  if (cfg_proto == PROTO_PLAIN) {
    memcpy(pl, body, (size_t)cfg_size);
    n = (size_t)cfg_size;
    body_at = 0;
  } else if (cfg_proto == PROTO_SOCKETIO) {
    /* text: 42["msg","SCB1<gid 8 hex><ctr 8 hex><ts 16 hex>xxx..."] with cfg_size characters between the quotes */
    char head[] = "42[\"msg\",\"";
    memcpy(pl, head, sizeof head - 1);
    n = sizeof head - 1;
    body_at = n;
    memset(pl + n, 'x', (size_t)cfg_size);
    memcpy(pl + n, "SCB1", 4);
    snprintf((char *)pl + n + 4, 9, "%08x", c->gid);
    pl[n + 12] = 'x'; /* snprintf's NUL; overwritten per message anyway */
    n += (size_t)cfg_size;
    pl[n++] = '"';
    pl[n++] = ']';
    c->frame = malloc(n + 16);
    c->frame_len = make_frame(c->frame, 1, pl, n);
    c->ctr_off = (c->frame_len - n) + body_at + 12; /* frame offset of the counter's hex */
    if (pl != payload) free(pl);
    return;
  } else {
    char rn[16];
    room_name(rn, c->room);
    pl[n++] = 0x83;
    n += mp_str(pl + n, "t");
    n += mp_str(pl + n, "pub");
    n += mp_str(pl + n, "room");
    n += mp_str(pl + n, rn);
    n += mp_str(pl + n, "body");
    if (cfg_size < 256) { pl[n++] = 0xc4; pl[n++] = (uint8_t)cfg_size; }
    else { pl[n++] = 0xc5; pl[n++] = (uint8_t)(cfg_size >> 8); pl[n++] = (uint8_t)cfg_size; }
    body_at = n;
    memcpy(pl + n, body, (size_t)cfg_size);
    n += (size_t)cfg_size;
  }
  c->frame = malloc(n + 16);
  c->frame_len = make_frame(c->frame, 2, pl, n);
  c->ctr_off = (c->frame_len - n) + body_at + 8; /* frame offset of body byte 8 (the counter) */
  if (pl != payload) free(pl);
}

static const char HEX[] = "0123456789abcdef";

/* Returns 0 when sent, -1 when skipped (open loop only: its output buffer is full, the server is not reading). */
static int send_pub(conn_t *c, uint64_t ts) {
  thread_t *t = c->t;
  uint8_t plain[24];
  int nchg = 16;
  if (cfg_rate > 0 && (c->wlen - c->woff) + c->frame_len > WBUF_CAP / 2) {
    INC(t->c.skipped, 1);
    if (ld_meas()) INC(t->c.win_skipped, 1);
    return -1;
  }
  if (cfg_proto == PROTO_SOCKETIO) {
    nchg = 24;
    for (int i = 0; i < 8; i++) plain[i] = (uint8_t)HEX[(c->next_ctr >> (28 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++) plain[8 + i] = (uint8_t)HEX[(ts >> (60 - 4 * i)) & 15];
  } else {
    put_u32(plain, c->next_ctr);
    put_u32(plain + 4, 0);
    put_u64(plain + 8, ts);
  }
  /* the mask index of a byte is its payload offset: frame offset minus the header length */
  uint8_t *f = c->frame;
  size_t hl = (f[1] & 0x7f) < 126 ? 6 : ((f[1] & 0x7f) == 126 ? 8 : 14);
  size_t po = c->ctr_off - hl;
  for (int i = 0; i < nchg; i++) f[c->ctr_off + i] = plain[i] ^ MASK[(po + i) & 3];
  out_append(c, f, c->frame_len);
  c->next_ctr++;
  c->inflight++;
  INC(t->inflight_total, 1);
  INC(t->c.sent, 1);
  if (cfg_proto != PROTO_SHARDCHAT && c->room < cfg_stall) INC(t->c.acks_stalled, 1);
  if (ld_meas()) INC(t->c.win_sent, 1);
  return 0;
}

static void send_text(conn_t *c, const char *s) {
  uint8_t fr[192];
  size_t fl = make_frame(fr, 1, (const uint8_t *)s, strlen(s));
  out_append(c, fr, fl);
}

static void send_join(conn_t *c) {
  uint8_t pl[64], fr[96];
  char rn[16];
  size_t n = 0;
  room_name(rn, c->room);
  if (cfg_proto == PROTO_SOCKETIO) { /* event 'join' with ack id 0: the server answers 430[] */
    char j[64];
    snprintf(j, sizeof j, "420[\"join\",\"%s\"]", rn);
    send_text(c, j);
    c->state = ST_JOINING;
    return;
  }
  pl[n++] = 0x82;
  n += mp_str(pl + n, "t");
  n += mp_str(pl + n, "join");
  n += mp_str(pl + n, "room");
  n += mp_str(pl + n, rn);
  size_t fl = make_frame(fr, 2, pl, n);
  out_append(c, fr, fl);
  c->state = ST_JOINING;
}

static void hist_add(thread_t *t, uint64_t ns);

static void mark_ready(conn_t *c) {
  if (c->state == ST_READY) return;
  c->state = ST_READY;
  INC(c->t->n_ready, 1);
  if (cfg_churn && ld_phase() == PH_RUN) {
    if (ld_meas()) { INC(c->t->c.win_cycles, 1); hist_add(c->t, now_ns() - c->cycle_t0); }
    INC(c->t->c.cycles, 1);
    c->recycle = 1;
  }
}

static void close_conn(conn_t *c, int code) {
  if (c->state == ST_CLOSED) return;
  thread_t *t = c->t;
  if (c->state != ST_READY) INC(t->n_failed, 1);
  if (c->state == ST_READY) INC(t->n_ready, -1);
  c->state = ST_CLOSED;
  epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  INC(t->inflight_total, -(long)c->inflight);
  c->inflight = 0;
  c->retry_pending = 0;
  INC(t->c.closed, 1);
  if (c->stalled) INC(t->c.stalled_closed, 1);
  counters_t *k = &t->c;
  for (int i = 0; i < k->n_close_codes; i++)
    if (k->close_code[i] == code) { k->close_count[i]++; return; }
  if (k->n_close_codes < MAX_CLOSE_CODES) {
    k->close_code[k->n_close_codes] = code;
    k->close_count[k->n_close_codes++] = 1;
  }
}

/* ---- MessagePack walking (top-level map of a server frame) ---- */

/* Returns the offset after the value at p[i], or -1. */
static long mp_skip(const uint8_t *p, long i, long n, int depth) {
  if (i >= n || depth > 64) return -1;
  uint8_t b = p[i++];
  long len = 0, cnt = 0;
  int kind = 0; /* 1 raw bytes, 2 array, 3 map */
  if (b <= 0x7f || b >= 0xe0) return i;
  if (b >= 0x80 && b <= 0x8f) { cnt = b & 0x0f; kind = 3; }
  else if (b >= 0x90 && b <= 0x9f) { cnt = b & 0x0f; kind = 2; }
  else if (b >= 0xa0 && b <= 0xbf) { len = b & 0x1f; kind = 1; }
  else switch (b) {
    case 0xc0: case 0xc2: case 0xc3: return i;
    case 0xc4: case 0xd9: if (i + 1 > n) return -1; len = p[i]; i += 1; kind = 1; break;
    case 0xc5: case 0xda: if (i + 2 > n) return -1; len = (p[i] << 8) | p[i + 1]; i += 2; kind = 1; break;
    case 0xc6: case 0xdb: if (i + 4 > n) return -1; len = (long)(((uint32_t)p[i] << 24) | ((uint32_t)p[i + 1] << 16) | ((uint32_t)p[i + 2] << 8) | p[i + 3]); i += 4; kind = 1; break;
    case 0xcc: case 0xd0: return i + 1 <= n ? i + 1 : -1;
    case 0xcd: case 0xd1: return i + 2 <= n ? i + 2 : -1;
    case 0xce: case 0xd2: case 0xca: return i + 4 <= n ? i + 4 : -1;
    case 0xcf: case 0xd3: case 0xcb: return i + 8 <= n ? i + 8 : -1;
    case 0xdc: if (i + 2 > n) return -1; cnt = (p[i] << 8) | p[i + 1]; i += 2; kind = 2; break;
    case 0xdd: if (i + 4 > n) return -1; cnt = (long)(((uint32_t)p[i] << 24) | ((uint32_t)p[i + 1] << 16) | ((uint32_t)p[i + 2] << 8) | p[i + 3]); i += 4; kind = 2; break;
    case 0xde: if (i + 2 > n) return -1; cnt = (p[i] << 8) | p[i + 1]; i += 2; kind = 3; break;
    case 0xdf: if (i + 4 > n) return -1; cnt = (long)(((uint32_t)p[i] << 24) | ((uint32_t)p[i + 1] << 16) | ((uint32_t)p[i + 2] << 8) | p[i + 3]); i += 4; kind = 3; break;
    default: return -1; /* ext types: not used by the protocol */
  }
  if (kind == 1) return i + len <= n ? i + len : -1;
  if (kind == 3) cnt *= 2;
  for (long k = 0; k < cnt; k++) {
    i = mp_skip(p, i, n, depth + 1);
    if (i < 0) return -1;
  }
  return i;
}

/* Reads a string at p[i]: sets *s, *sl, returns the offset after it, or -1 when not a string. */
static long mp_str_at(const uint8_t *p, long i, long n, const uint8_t **s, long *sl) {
  if (i >= n) return -1;
  uint8_t b = p[i];
  long len, h;
  if (b >= 0xa0 && b <= 0xbf) { len = b & 0x1f; h = 1; }
  else if (b == 0xd9 && i + 1 < n) { len = p[i + 1]; h = 2; }
  else if (b == 0xda && i + 2 < n) { len = (p[i + 1] << 8) | p[i + 2]; h = 3; }
  else return -1;
  if (i + h + len > n) return -1;
  *s = p + i + h;
  *sl = len;
  return i + h + len;
}

/* Reads an unsigned integer at p[i]; -1 when not one. */
static long mp_uint_at(const uint8_t *p, long i, long n, uint64_t *v) {
  if (i >= n) return -1;
  uint8_t b = p[i];
  if (b <= 0x7f) { *v = b; return i + 1; }
  if (b == 0xcc && i + 1 < n) { *v = p[i + 1]; return i + 2; }
  if (b == 0xcd && i + 2 < n) { *v = ((uint64_t)p[i + 1] << 8) | p[i + 2]; return i + 3; }
  if (b == 0xce && i + 4 < n) { *v = ((uint64_t)p[i + 1] << 24) | ((uint64_t)p[i + 2] << 16) | ((uint64_t)p[i + 3] << 8) | p[i + 4]; return i + 5; }
  if (b == 0xcf && i + 8 < n) { uint64_t x = 0; for (int k = 1; k <= 8; k++) x = (x << 8) | p[i + k]; *v = x; return i + 9; }
  return -1;
}

#define KEYIS(s, l, lit) ((l) == (long)sizeof(lit) - 1 && memcmp((s), (lit), sizeof(lit) - 1) == 0)

/* ---- message handling ---- */

static void hist_add(thread_t *t, uint64_t ns) {
  uint64_t us = ns / 1000;
  uint32_t b;
  if (us < H_FINE) b = (uint32_t)us;
  else if (us / 1000 < H_COARSE) b = H_FINE + (uint32_t)(us / 1000);
  else b = H_SIZE - 1;
  t->hist[b]++;
  t->c.lat_sum_ns += ns;
  t->c.lat_count++;
  if (ns > t->c.lat_max_ns) t->c.lat_max_ns = ns;
}

static void on_delivery(conn_t *c, const uint8_t *body, long blen, uint64_t now) {
  thread_t *t = c->t;
  if (blen < BODY_MIN || body[0] != MAGIC0 || body[1] != MAGIC1 || body[2] != MAGIC2 || body[3] != MAGIC3) {
    INC(t->c.unknown, 1);
    return;
  }
  uint32_t gid = get_u32(body + 4), ctr = get_u32(body + 8);
  uint64_t ts = get_u64(body + 16);
  if (c->stalled) { INC(t->c.stalled_delivered, 1); return; } /* not counted: it was told to stall */
  INC(t->c.delivered, 1);
  if (ld_meas()) {
    INC(t->c.win_delivered, 1);
    hist_add(t, now > ts ? now - ts : 0);
  }
  if ((int)(gid / (uint32_t)cfg_senders) != c->room) { INC(t->c.wrong_room, 1); return; }
  uint32_t s = gid % (uint32_t)cfg_senders;
  uint32_t e = c->expect[s];
  if (ctr != e) {
    if (ctr > e) INC(t->c.gaps, ctr - e);
    else INC(t->c.repeats, 1);
  }
  if (ctr >= e) c->expect[s] = ctr + 1;
  if (gid == c->gid && c->sender >= 0) {
    if (c->inflight > 0) { c->inflight--; INC(t->inflight_total, -1); }
    if (ld_phase() == PH_RUN && cfg_rate <= 0) send_pub(c, now_ns()); /* closed loop: the next one */
  }
}

static void on_err(conn_t *c, const uint8_t *code, long cl, uint64_t now) {
  thread_t *t = c->t;
  if (KEYIS(code, cl, "overloaded")) INC(t->c.err_overloaded, 1);
  else if (KEYIS(code, cl, "rate_limited")) INC(t->c.err_rate_limited, 1);
  else if (KEYIS(code, cl, "shutting_down")) INC(t->c.err_shutting_down, 1);
  else {
    INC(t->c.err_other, 1);
    if (note_ok()) fprintf(stderr, "loadgen: conn %d got err %.*s\n", c->idx, (int)cl, (const char *)code);
  }
  if (ld_meas()) INC(t->c.win_errors, 1);
  if (c->state == ST_JOINING) { /* join refused: try again shortly */
    c->state = ST_HELLO;
    c->retry_pending = 1;
    c->retry_at_ns = now + 50000000ull;
    return;
  }
  if (c->sender >= 0 && c->inflight > 0) {
    /* the pub it answers was not taken: its slot comes back after 50 ms (the engine's retryAfterMs) */
    INC(t->c.pub_errors, 1);
    c->inflight--;
    INC(t->inflight_total, -1);
    if (cfg_rate <= 0) { /* open loop: the schedule goes on, no retry */
      c->retry_pending++;
      c->retry_at_ns = now + 50000000ull;
    }
  }
}

static void on_binary(conn_t *c, const uint8_t *p, long n, uint64_t now) {
  thread_t *t = c->t;
  if (cfg_proto == PROTO_PLAIN) {
    on_delivery(c, p, n, now);
    return;
  }
  long i = 0, cnt;
  if (n < 1) { INC(t->c.bad_frames, 1); return; }
  if (p[0] >= 0x80 && p[0] <= 0x8f) { cnt = p[0] & 0x0f; i = 1; }
  else if (p[0] == 0xde && n >= 3) { cnt = (p[1] << 8) | p[2]; i = 3; }
  else { INC(t->c.bad_frames, 1); return; }
  const uint8_t *ty = NULL, *body = NULL, *code = NULL;
  long tyl = 0, bodyl = 0, codel = 0;
  uint64_t seq = 0;
  int have_seq = 0;
  for (long k = 0; k < cnt; k++) {
    const uint8_t *key;
    long kl;
    long vi = mp_str_at(p, i, n, &key, &kl);
    if (vi < 0) { INC(t->c.bad_frames, 1); return; }
    long ve;
    if (KEYIS(key, kl, "t")) ve = mp_str_at(p, vi, n, &ty, &tyl);
    else if (KEYIS(key, kl, "seq")) { ve = mp_uint_at(p, vi, n, &seq); have_seq = ve >= 0; if (ve < 0) ve = mp_skip(p, vi, n, 0); }
    else if (KEYIS(key, kl, "code")) ve = mp_str_at(p, vi, n, &code, &codel);
    else if (KEYIS(key, kl, "body")) {
      uint8_t b = vi < n ? p[vi] : 0;
      if (b == 0xc4 && vi + 1 < n) { bodyl = p[vi + 1]; body = p + vi + 2; }
      else if (b == 0xc5 && vi + 2 < n) { bodyl = (p[vi + 1] << 8) | p[vi + 2]; body = p + vi + 3; }
      ve = mp_skip(p, vi, n, 0);
    } else ve = mp_skip(p, vi, n, 0);
    if (ve < 0) { INC(t->c.bad_frames, 1); return; }
    i = ve;
  }
  if (ty == NULL) { INC(t->c.bad_frames, 1); return; }
  if (KEYIS(ty, tyl, "msg")) {
    if (have_seq) {
      if (c->last_seq != 0 && seq != c->last_seq + 1) INC(t->c.seq_gaps, 1);
      c->last_seq = seq;
    }
    if (body != NULL) on_delivery(c, body, bodyl, now);
    else INC(t->c.unknown, 1);
  } else if (KEYIS(ty, tyl, "ack")) {
    INC(t->c.acks, 1);
    if (c->room < cfg_stall) INC(t->c.acks_stalled, 1);
  } else if (KEYIS(ty, tyl, "presence")) {
    INC(t->c.presence, 1);
  } else if (KEYIS(ty, tyl, "hello")) {
    INC(t->c.hello, 1);
    if (c->state == ST_HELLO) send_join(c);
  } else if (KEYIS(ty, tyl, "joined")) {
    INC(t->c.joined_frames, 1);
    if (have_seq) c->last_seq = seq;
    if (c->state == ST_JOINING) mark_ready(c);
  } else if (KEYIS(ty, tyl, "err")) {
    on_err(c, code ? code : (const uint8_t *)"?", code ? codel : 1, now);
  } else {
    INC(t->c.unknown, 1);
  }
}

static int hexv(uint8_t ch) { return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1; }
static int hex_u64(const uint8_t *p, int n, uint64_t *v) {
  uint64_t x = 0;
  for (int i = 0; i < n; i++) { int h = hexv(p[i]); if (h < 0) return -1; x = (x << 4) | (uint64_t)h; }
  *v = x;
  return 0;
}

/* Socket.IO over engine.io v4, text frames: 0{open} -> send 40; 40{sid} -> join (420[...]); 430[] -> ready;
 * 2 (ping) -> 3; 42["msg","SCB1..."] -> a delivery; 41 (disconnect) -> counted as a close. */
static void on_text(conn_t *c, const uint8_t *p, long n, uint64_t now) {
  thread_t *t = c->t;
  if (cfg_proto != PROTO_SOCKETIO) { INC(t->c.text_frames, 1); return; }
  static const char MSG[] = "42[\"msg\",\"";
  long ml = (long)sizeof MSG - 1;
  if (n >= ml + 36 && memcmp(p, MSG, (size_t)ml) == 0) {
    const uint8_t *b = p + ml;
    uint64_t gid, ctr, ts;
    if (memcmp(b, "SCB1", 4) != 0 || hex_u64(b + 4, 8, &gid) || hex_u64(b + 12, 8, &ctr) || hex_u64(b + 20, 16, &ts)) {
      INC(t->c.unknown, 1);
      return;
    }
    uint8_t body[BODY_MIN];
    body[0] = MAGIC0; body[1] = MAGIC1; body[2] = MAGIC2; body[3] = MAGIC3;
    put_u32(body + 4, (uint32_t)gid);
    put_u32(body + 8, (uint32_t)ctr);
    put_u32(body + 12, 0);
    put_u64(body + 16, ts);
    on_delivery(c, body, BODY_MIN, now);
    return;
  }
  if (n == 1 && p[0] == '2') { send_text(c, "3"); INC(t->c.pings, 1); return; }
  if (n >= 1 && p[0] == '0') { INC(t->c.sio_opens, 1); send_text(c, "40"); return; }
  if (n >= 2 && p[0] == '4' && p[1] == '0') { INC(t->c.hello, 1); if (c->state == ST_HELLO) send_join(c); return; }
  if (n >= 3 && p[0] == '4' && p[1] == '3' && p[2] == '0') { INC(t->c.joined_frames, 1); if (c->state == ST_JOINING) mark_ready(c); return; }
  if (n >= 2 && p[0] == '4' && p[1] == '1') { INC(t->c.err_other, 1); return; }
  if (n >= 2 && p[0] == '4' && p[1] == '4') {
    INC(t->c.err_other, 1);
    if (note_ok()) fprintf(stderr, "loadgen: conn %d socket.io error %.*s\n", c->idx, (int)(n > 80 ? 80 : n), (const char *)p);
    return;
  }
  INC(t->c.unknown, 1);
}

/* Parses complete frames in rbuf. Returns -1 when the connection got closed. */
static int parse_frames(conn_t *c, uint64_t now) {
  thread_t *t = c->t;
  size_t i = 0;
  if (c->state == ST_HANDSHAKE) {
    uint8_t *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (e == NULL) return c->rlen > 8192 ? (close_conn(c, -2), -1) : 0;
    if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3) != 0) {
      if (note_ok()) fprintf(stderr, "loadgen: conn %d handshake refused: %.*s\n", c->idx, (int)((e - c->rbuf) > 80 ? 80 : (e - c->rbuf)), (char *)c->rbuf);
      INC(t->c.conn_failures, 1);
      close_conn(c, -2);
      return -1;
    }
    i = (size_t)(e - c->rbuf) + 4;
    t->n_open++;
    if (cfg_proto == PROTO_PLAIN) mark_ready(c);
    else c->state = ST_HELLO;
    if (c->recycle) { if (i > 0) { memmove(c->rbuf, c->rbuf + i, c->rlen - i); c->rlen -= i; } return 0; }
  }
  for (;;) {
    size_t avail = c->rlen - i;
    if (avail < 2) break;
    const uint8_t *h = c->rbuf + i;
    int op = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    size_t hl = 2;
    if (h[1] & 0x80) { INC(t->c.bad_frames, 1); } /* servers must not mask; we would mis-parse */
    if (len == 126) { if (avail < 4) break; len = ((uint64_t)h[2] << 8) | h[3]; hl = 4; }
    else if (len == 127) { if (avail < 10) break; len = 0; for (int k = 0; k < 8; k++) len = (len << 8) | h[2 + k]; hl = 10; }
    if (avail < hl + len) {
      if (hl + len > c->rcap) { /* grow for a large frame */
        size_t nc = c->rcap;
        while (nc < hl + len) nc *= 2;
        memmove(c->rbuf, c->rbuf + i, avail);
        c->rlen = avail;
        i = 0;
        c->rbuf = realloc(c->rbuf, nc);
        c->rcap = nc;
      }
      break;
    }
    const uint8_t *pl = h + hl;
    if (op == 2) on_binary(c, pl, (long)len, now);
    else if (op == 1) on_text(c, pl, (long)len, now);
    else if (op == 8) {
      int code = len >= 2 ? (pl[0] << 8) | pl[1] : 1005;
      if (note_ok())
        fprintf(stderr, "loadgen: conn %d closed by server with %d %.*s\n", c->idx, code, (int)(len > 2 ? len - 2 : 0), (const char *)pl + 2);
      close_conn(c, code);
      return -1;
    } else if (op == 9) {
      uint8_t fr[160];
      size_t fl = make_frame(fr, 10, pl, len > 125 ? 125 : len);
      out_append(c, fr, fl);
      INC(t->c.pings, 1);
    }
    i += hl + len;
    if (c->state == ST_CLOSED) return -1;
    if (c->recycle) break;
  }
  if (i > 0) {
    memmove(c->rbuf, c->rbuf + i, c->rlen - i);
    c->rlen -= i;
  }
  return 0;
}

static void set_events(conn_t *c, uint32_t ev) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(c->t->ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void flush_out(conn_t *c) {
  if (c->state == ST_CLOSED || c->state == ST_CONNECTING) return;
  while (c->woff < c->wlen) {
    ssize_t w = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
    if (w > 0) { c->woff += (size_t)w; continue; }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c->want_out) { c->want_out = 1; set_events(c, EPOLLIN | EPOLLOUT); }
      return;
    }
    if (w < 0 && errno == EINTR) continue;
    close_conn(c, -1);
    return;
  }
  c->woff = c->wlen = 0;
  if (c->want_out) { c->want_out = 0; set_events(c, EPOLLIN); }
}

static int port_of(const conn_t *c) { return cfg_port2 > 0 && (c->member & 1) ? cfg_port2 : cfg_port; }

static void handshake(conn_t *c) {
  char req[512];
  char rn[16];
  room_name(rn, c->room);
  int n = snprintf(req, sizeof req,
                   "GET %s%cuser=u%d_%d&room=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: c2hhcmRjaGF0LWxvYWRnZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   cfg_path, strchr(cfg_path, '?') ? '&' : '?', c->room, c->member, rn, cfg_host, port_of(c));
  out_append(c, (const uint8_t *)req, (size_t)n);
  c->state = ST_HANDSHAKE;
}

static int start_connect(conn_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (c->stalled) { /* a small receive buffer: the server's buffers fill soon once it stops reading */
    int rb = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
  }
  c->cycle_t0 = now_ns();
  c->recycle = 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port_of(c))};
  inet_pton(AF_INET, cfg_host, &a.sin_addr);
  c->fd = fd;
  c->state = ST_CONNECTING;
  struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(c->t->ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
  int r = connect(fd, (struct sockaddr *)&a, sizeof a);
  if (r < 0 && errno != EINPROGRESS) { INC(c->t->c.conn_failures, 1); close_conn(c, -3); return -1; }
  return 0;
}

/* --churn: close a ready connection (close frame 1000, then an abortive close so that no TIME_WAIT
 * is left on the loopback ports) and, while the run lasts, connect it again. */
static void recycle_conn(conn_t *c) {
  thread_t *t = c->t;
  c->recycle = 0;
  if (c->state == ST_READY) INC(t->n_ready, -1);
  epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
  uint8_t fr[16];
  uint8_t code[2] = {0x03, 0xe8};
  size_t fl = make_frame(fr, 8, code, 2);
  (void)!write(c->fd, fr, fl);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(c->fd);
  c->fd = -1;
  c->rlen = 0;
  c->wlen = c->woff = 0;
  c->want_out = 0;
  c->last_seq = 0;
  c->state = ST_CLOSED;
  if (ld_phase() == PH_RUN) start_connect(c);
}

static void on_event(conn_t *c, uint32_t ev) {
  thread_t *t = c->t;
  if (c->state == ST_CLOSED) return;
  if (c->state == ST_CONNECTING) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
      if (note_ok()) fprintf(stderr, "loadgen: conn %d connect failed: %s\n", c->idx, strerror(err));
      INC(t->c.conn_failures, 1);
      close_conn(c, -3);
      return;
    }
    set_events(c, EPOLLIN);
    handshake(c);
    flush_out(c);
    return;
  }
  if (ev & EPOLLIN) {
    for (;;) {
      size_t room = c->rcap - c->rlen;
      ssize_t r = read(c->fd, c->rbuf + c->rlen, room);
      if (r > 0) {
        c->rlen += (size_t)r;
        if (ld_meas()) { INC(t->c.win_reads, 1); INC(t->c.win_read_bytes, (uint64_t)r); }
        if (parse_frames(c, now_ns()) < 0) return;
        if (c->recycle) { flush_out(c); recycle_conn(c); return; }
        if ((size_t)r < room) break;
        continue;
      }
      if (r == 0) { close_conn(c, -1); return; }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close_conn(c, -1);
      return;
    }
  } else if (ev & (EPOLLERR | EPOLLHUP)) {
    close_conn(c, -1);
    return;
  }
  flush_out(c);
}

static void *thread_main(void *arg) {
  thread_t *t = arg;
  struct epoll_event evs[256];
  int next = 0, connecting = 0;
  int started = 0, drain_started = 0;
  uint64_t last_retry_scan = 0;
  for (;;) {
    int ph = ld_phase();
    /* keep a bounded number of handshakes in flight */
    connecting = 0;
    if (next < t->nconns) {
      for (int k = 0; k < next; k++) {
        int s = t->conns[k]->state;
        if (s == ST_CONNECTING || s == ST_HANDSHAKE) connecting++;
      }
      while (next < t->nconns && connecting < cfg_connect_inflight) {
        if (start_connect(t->conns[next]) == 0) connecting++;
        next++;
      }
    }
    if (ph == PH_RUN && !started) {
      started = 1;
      uint64_t ts = now_ns();
      for (int k = 0; k < t->nconns; k++) {
        conn_t *c = t->conns[k];
        if (c->stalled && c->state == ST_READY) { /* stop reading (events 0: only errors are reported) */
          struct epoll_event e = {.events = 0, .data.ptr = c};
          epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &e);
          continue;
        }
        if (cfg_churn && c->state == ST_READY) { INC(t->n_ready, -1); c->state = ST_HELLO; c->recycle = 0; recycle_conn(c); continue; }
        if (c->sender < 0 || c->state != ST_READY || cfg_idle_hold > 0 || cfg_churn) continue;
        if (cfg_rate > 0) { /* open loop: spread the senders' first sends over one interval */
          c->next_send_ns = ts + (uint64_t)(((uint64_t)c->gid * 2654435761ull) % (uint64_t)g_interval_ns);
          continue;
        }
        for (int w = 0; w < cfg_window; w++) send_pub(c, ts);
        flush_out(c);
      }
    }
    if (ph == PH_DRAIN && !drain_started) {
      drain_started = 1;
      for (int k = 0; k < t->nconns; k++) { /* stalled members read again (what they get is not counted) */
        conn_t *c = t->conns[k];
        if (c->stalled && c->state != ST_CLOSED && c->fd >= 0) set_events(c, EPOLLIN | (c->want_out ? EPOLLOUT : 0));
      }
    }
    if (ph == PH_DONE) break;
    if (ph == PH_RUN && cfg_rate > 0) {
      uint64_t now = now_ns();
      for (int k = 0; k < t->nconns; k++) {
        conn_t *c = t->conns[k];
        if (c->sender < 0 || c->state != ST_READY || c->next_send_ns > now) continue;
        int sent = 0;
        while (c->next_send_ns <= now) {
          if (now - c->next_send_ns > 50000000ull) { /* more than 50 ms behind its schedule: the generator cannot offer it */
            INC(t->c.skipped, 1);
            if (ld_meas()) INC(t->c.win_skipped, 1);
          } else if (send_pub(c, now) == 0) sent = 1;
          c->next_send_ns += (uint64_t)g_interval_ns;
        }
        if (sent) flush_out(c);
      }
    }
    int n = epoll_wait(t->ep, evs, 256, next < t->nconns || (ph == PH_RUN && cfg_rate > 0) ? 1 : 5);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int k = 0; k < n; k++) on_event(evs[k].data.ptr, evs[k].events);
    uint64_t now = now_ns();
    if (now - last_retry_scan > 5000000ull) {
      last_retry_scan = now;
      for (int k = 0; k < t->nconns; k++) {
        conn_t *c = t->conns[k];
        if (cfg_churn && c->state == ST_CLOSED && ld_phase() == PH_RUN) { start_connect(c); continue; } /* a failed attempt: again */
        if (!c->retry_pending || now < c->retry_at_ns || c->state == ST_CLOSED) continue;
        if (c->state == ST_HELLO) { c->retry_pending = 0; send_join(c); }
        else if (c->state == ST_READY && ld_phase() == PH_RUN) {
          while (c->retry_pending > 0) { c->retry_pending--; send_pub(c, now); }
        } else if (ld_phase() != PH_RUN) c->retry_pending = 0;
        flush_out(c);
      }
    }
  }
  /* polite close: a close frame 1000, then the socket */
  uint8_t fr[16];
  uint8_t code[2] = {0x03, 0xe8};
  size_t fl = make_frame(fr, 8, code, 2);
  for (int k = 0; k < t->nconns; k++) {
    conn_t *c = t->conns[k];
    if (c->state == ST_CLOSED || c->state == ST_CONNECTING) continue;
    if (c->state != ST_HANDSHAKE) { (void)!write(c->fd, fr, fl); }
    shutdown(c->fd, SHUT_WR);
    close(c->fd);
    c->state = ST_CLOSED;
  }
  return NULL;
}

/* ---- /proc sampling ---- */

typedef struct { int tid; char comm[32]; double cpu_s; } task_cpu_t;
typedef struct { double proc_s; int ntasks; task_cpu_t tasks[128]; } proc_sample_t;
typedef struct { int n; uint64_t busy[64], total[64]; } core_sample_t;

static double clk_tck;

static int read_stat_cpu(const char *path, char *comm, size_t commsz, double *cpu) {
  char buf[1024];
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
  if (!lp || !rp) return -1;
  if (comm) {
    size_t cl = (size_t)(rp - lp - 1);
    if (cl >= commsz) cl = commsz - 1;
    memcpy(comm, lp + 1, cl);
    comm[cl] = 0;
  }
  /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
  char *p = rp + 2;
  unsigned long long ut = 0, stt = 0;
  int field = 3;
  char *save;
  for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
    if (field == 14) ut = strtoull(tok, NULL, 10);
    if (field == 15) { stt = strtoull(tok, NULL, 10); break; }
  }
  *cpu = (double)(ut + stt) / clk_tck;
  return 0;
}

static void sample_proc(int pid, proc_sample_t *s) {
  char path[128];
  memset(s, 0, sizeof *s);
  if (pid <= 0) return;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  read_stat_cpu(path, NULL, 0, &s->proc_s);
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) && s->ntasks < 128) {
    if (e->d_name[0] == '.') continue;
    task_cpu_t *tk = &s->tasks[s->ntasks];
    tk->tid = atoi(e->d_name);
    char p2[160];
    snprintf(p2, sizeof p2, "/proc/%d/task/%d/stat", pid, tk->tid);
    if (read_stat_cpu(p2, tk->comm, sizeof tk->comm, &tk->cpu_s) == 0) s->ntasks++;
  }
  closedir(d);
}

static void sample_cores(core_sample_t *s) {
  memset(s, 0, sizeof *s);
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    int cpu;
    unsigned long long v[10] = {0};
    if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9') continue;
    if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 9) continue;
    if (cpu < 0 || cpu >= 64) continue;
    uint64_t total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    s->busy[cpu] = total - v[3] - v[4];
    s->total[cpu] = total;
    if (cpu + 1 > s->n) s->n = cpu + 1;
  }
  fclose(f);
}

static long rss_kb(int pid) {
  char path[64], line[256];
  long kb = -1;
  if (pid <= 0) return -1;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) { kb = atol(line + 6); break; }
  fclose(f);
  return kb;
}

static double rusage_s(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (double)r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + (double)r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static void sleep_s(double s) {
  struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* ---- aggregation ---- */

static void sum_counters(counters_t *o) {
  memset(o, 0, sizeof *o);
  for (int i = 0; i < cfg_threads; i++) {
    counters_t *c = &g_threads[i].c;
#define A(f) o->f += LD(c->f)
    A(delivered); A(sent); A(pub_errors); A(acks); A(presence); A(hello); A(joined_frames); A(unknown); A(text_frames); A(pings);
    A(err_overloaded); A(err_rate_limited); A(err_shutting_down); A(err_other);
    A(gaps); A(repeats); A(wrong_room); A(seq_gaps); A(bad_frames); A(closed); A(conn_failures);
    A(win_delivered); A(win_sent); A(win_errors); A(win_reads); A(win_read_bytes);
    A(lat_sum_ns); A(lat_count);
    A(skipped); A(win_skipped); A(cycles); A(win_cycles); A(stalled_delivered); A(acks_stalled); A(sio_opens); A(stalled_closed);
#undef A
    if (c->lat_max_ns > o->lat_max_ns) o->lat_max_ns = c->lat_max_ns;
    for (int k = 0; k < c->n_close_codes; k++) {
      int found = 0;
      for (int j = 0; j < o->n_close_codes; j++)
        if (o->close_code[j] == c->close_code[k]) { o->close_count[j] += c->close_count[k]; found = 1; }
      if (!found && o->n_close_codes < MAX_CLOSE_CODES) {
        o->close_code[o->n_close_codes] = c->close_code[k];
        o->close_count[o->n_close_codes++] = c->close_count[k];
      }
    }
  }
}

static int sum_ready(void) { int n = 0; for (int i = 0; i < cfg_threads; i++) n += __atomic_load_n(&g_threads[i].n_ready, __ATOMIC_RELAXED); return n; }
static int sum_failed(void) { int n = 0; for (int i = 0; i < cfg_threads; i++) n += __atomic_load_n(&g_threads[i].n_failed, __ATOMIC_RELAXED); return n; }
static long sum_inflight(void) { long n = 0; for (int i = 0; i < cfg_threads; i++) n += __atomic_load_n(&g_threads[i].inflight_total, __ATOMIC_RELAXED); return n; }

static double pct_us(const uint64_t *h, uint64_t count, double q) {
  if (count == 0) return -1;
  uint64_t rank = (uint64_t)(q * (double)count);
  if (rank >= count) rank = count - 1;
  uint64_t acc = 0;
  for (uint32_t b = 0; b < H_SIZE; b++) {
    acc += h[b];
    if (acc > rank) {
      if (b < H_FINE) return b + 0.5;
      if (b < H_SIZE - 1) return (double)(b - H_FINE) * 1000.0 + 500.0;
      return 1e8;
    }
  }
  return -1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen --port P [--host 127.0.0.1] [--proto plain|shardchat] [--rooms 10] [--members 100]\n"
          "  [--senders 10] [--size 128] [--window 8] [--threads 1] [--warmup 2] [--duration 5] [--drain 5]\n"
          "  [--port2 P (members with an odd index connect there: a cross-node run)] [--server-pid PID] [--cores 0,1] [--connect-inflight 200] [--path /ws] [--setup-timeout 30]\n"
          "  [--proto socketio (--path /socket.io/?EIO=4&transport=websocket)]\n"
          "  [--rate MSGS_PER_S (open loop: sends per second, all senders)] [--idle-hold S (no sends; server RSS)]\n"
          "  [--churn 1 (close every connection once ready, reconnect)] [--stall N (last member of rooms 0..N-1 stops reading)]\n");
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && (i++, 1))
    if (OPT("--port")) cfg_port = atoi(v);
    else if (OPT("--port2")) cfg_port2 = atoi(v);
    else if (OPT("--host")) cfg_host = v;
    else if (OPT("--proto")) cfg_proto = strcmp(v, "plain") == 0 ? PROTO_PLAIN : strcmp(v, "shardchat") == 0 ? PROTO_SHARDCHAT : strcmp(v, "socketio") == 0 ? PROTO_SOCKETIO : (usage(), 0);
    else if (OPT("--rate")) cfg_rate = atof(v);
    else if (OPT("--idle-hold")) cfg_idle_hold = atof(v);
    else if (OPT("--churn")) cfg_churn = atoi(v);
    else if (OPT("--stall")) cfg_stall = atoi(v);
    else if (OPT("--rooms")) cfg_rooms = atoi(v);
    else if (OPT("--members")) cfg_members = atoi(v);
    else if (OPT("--senders")) cfg_senders = atoi(v);
    else if (OPT("--size")) cfg_size = atoi(v);
    else if (OPT("--window")) cfg_window = atoi(v);
    else if (OPT("--threads")) cfg_threads = atoi(v);
    else if (OPT("--warmup")) cfg_warmup = atof(v);
    else if (OPT("--duration")) cfg_duration = atof(v);
    else if (OPT("--drain")) cfg_drain = atof(v);
    else if (OPT("--server-pid")) cfg_server_pid = atoi(v);
    else if (OPT("--cores")) cfg_cores = v;
    else if (OPT("--connect-inflight")) cfg_connect_inflight = atoi(v);
    else if (OPT("--path")) cfg_path = v;
    else if (OPT("--setup-timeout")) cfg_setup_timeout = atof(v);
    else usage();
#undef OPT
  }
  if (cfg_port <= 0 || cfg_rooms < 1 || cfg_members < 1 || cfg_senders < 1 || cfg_senders > cfg_members || cfg_size < BODY_MIN ||
      cfg_size > 4000 || cfg_window < 1 || cfg_threads < 1 || cfg_threads > 64 || cfg_duration <= 0 || cfg_rate < 0 ||
      (cfg_proto == PROTO_SOCKETIO && cfg_size < 36) || cfg_stall < 0 || cfg_stall > cfg_rooms || (cfg_stall > 0 && cfg_senders >= cfg_members))
    usage();
  if (cfg_rate > 0) g_interval_ns = 1e9 * (double)(cfg_rooms * cfg_senders) / cfg_rate;
  if (cfg_rooms * cfg_members > 2000) { WBUF_CAP = 32 * 1024; RBUF_START = 8 * 1024; }
  signal(SIGPIPE, SIG_IGN);
  clk_tck = (double)sysconf(_SC_CLK_TCK);
  g_total_conns = cfg_rooms * cfg_members;

  g_threads = calloc((size_t)cfg_threads, sizeof(thread_t));
  for (int i = 0; i < cfg_threads; i++) {
    thread_t *t = &g_threads[i];
    t->id = i;
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    if (t->ep < 0) die("epoll_create1");
    t->conns = calloc((size_t)g_total_conns / (size_t)cfg_threads + 1, sizeof(conn_t *));
    t->hist = calloc(H_SIZE, sizeof(uint32_t));
  }
  /* connection i: room i % R, member i / R (so rooms fill evenly); senders are members 0..S-1 */
  for (int i = 0; i < g_total_conns; i++) {
    conn_t *c = calloc(1, sizeof(conn_t));
    thread_t *t = &g_threads[i % cfg_threads];
    c->idx = i;
    c->t = t;
    c->fd = -1;
    c->room = i % cfg_rooms;
    c->member = i / cfg_rooms;
    c->sender = c->member < cfg_senders ? c->member : -1;
    c->gid = (uint32_t)(c->room * cfg_senders + (c->sender < 0 ? 0 : c->sender));
    c->expect = calloc((size_t)cfg_senders, sizeof(uint32_t));
    c->stalled = c->room < cfg_stall && c->member == cfg_members - 1;
    c->rcap = RBUF_START;
    c->rbuf = malloc(c->rcap);
    c->wbuf = malloc(WBUF_CAP);
    if (c->sender >= 0) build_frame(c);
    t->conns[t->nconns++] = c;
  }

  long rss0 = rss_kb(cfg_server_pid), rss1 = -1;
  uint64_t t0 = now_ns();
  for (int i = 0; i < cfg_threads; i++) pthread_create(&g_threads[i].th, NULL, thread_main, &g_threads[i]);

  /* setup: every connection open (and joined) */
  while (sum_ready() + sum_failed() < g_total_conns) {
    if ((double)(now_ns() - t0) / 1e9 > cfg_setup_timeout) break;
    sleep_s(0.002);
  }
  uint64_t t_ready = now_ns();
  int ready = sum_ready();
  fprintf(stderr, "loadgen: %d/%d connections ready in %.0f ms\n", ready, g_total_conns, (double)(t_ready - t0) / 1e6);
  int setup_ok = ready == g_total_conns;
  /* let presence frames and stragglers settle before the clock starts */
  sleep_s(0.2);

  double gen0 = 0, gen1 = 0, wall = 0;
  proc_sample_t *ps0 = calloc(1, sizeof *ps0), *ps1 = calloc(1, sizeof *ps1);
  core_sample_t cs0, cs1;
  counters_t w1;
  long drain_left = 0;
  double drain_ms = 0;
  memset(&cs0, 0, sizeof cs0); memset(&cs1, 0, sizeof cs1);
  memset(&w1, 0, sizeof w1);
  if (setup_ok && cfg_idle_hold > 0) {
    /* idle: nothing is sent; the server's RSS after it settled (median of 3 samples) */
    sleep_s(cfg_idle_hold);
    long a = rss_kb(cfg_server_pid); sleep_s(0.25);
    long b = rss_kb(cfg_server_pid); sleep_s(0.25);
    long d = rss_kb(cfg_server_pid);
    rss1 = a > b ? (b > d ? b : (a > d ? d : a)) : (a > d ? a : (b > d ? d : b));
  } else if (setup_ok) {
    st_phase(PH_RUN);
    sleep_s(cfg_warmup);
    sample_proc(cfg_server_pid, ps0);
    sample_cores(&cs0);
    gen0 = rusage_s();
    uint64_t m0 = now_ns();
    __atomic_store_n(&g_measuring, 1, __ATOMIC_RELAXED);
    sleep_s(cfg_duration);
    __atomic_store_n(&g_measuring, 0, __ATOMIC_RELAXED);
    uint64_t m1 = now_ns();
    gen1 = rusage_s();
    sample_cores(&cs1);
    sample_proc(cfg_server_pid, ps1);
    wall = (double)(m1 - m0) / 1e9;
    /* drain: no new messages; wait (bounded by --drain) until every sender's messages came back to it,
     * every member got every message and (shardchat) every pub was acked */
    st_phase(PH_DRAIN);
    uint64_t d0 = now_ns();
    for (;;) {
      sum_counters(&w1);
      uint64_t expect = (cfg_proto != PROTO_SHARDCHAT ? w1.sent - w1.pub_errors : w1.acks) * (uint64_t)cfg_members - w1.acks_stalled;
      int done = sum_inflight() == 0 && w1.delivered >= expect && (cfg_proto != PROTO_SHARDCHAT || w1.acks >= w1.sent - w1.pub_errors) &&
                 w1.stalled_closed >= (uint64_t)cfg_stall; /* a stalled member: until its connection ended (read to its end) */
      if (done || (double)(now_ns() - d0) / 1e9 >= cfg_drain) break;
      sleep_s(0.005);
    }
    drain_left = sum_inflight();
    drain_ms = (double)(now_ns() - d0) / 1e6;
  }
  st_phase(PH_DONE);
  for (int i = 0; i < cfg_threads; i++) pthread_join(g_threads[i].th, NULL);
  counters_t tot;
  sum_counters(&tot);

  static uint64_t hist[H_SIZE];
  for (int i = 0; i < cfg_threads; i++)
    for (int b = 0; b < H_SIZE; b++) hist[b] += g_threads[i].hist[b];

  /* ---- JSON ---- */
  /* plain: every message sent should reach every member; shardchat: every acknowledged one must (guarantees 1 and 3),
   * and every pub must be answered (ack or err) unless its connection was closed first */
  uint64_t expected = (cfg_proto != PROTO_SHARDCHAT ? tot.sent - tot.pub_errors : tot.acks) * (uint64_t)cfg_members - tot.acks_stalled;
  long long unanswered = cfg_proto != PROTO_SHARDCHAT ? 0 : (long long)(tot.sent - tot.pub_errors) - (long long)tot.acks;
  printf("{\n");
  printf("  \"proto\": \"%s\", \"rooms\": %d, \"members\": %d, \"senders_per_room\": %d, \"size\": %d, \"window\": %d, \"threads\": %d,\n",
         cfg_proto == PROTO_PLAIN ? "plain" : cfg_proto == PROTO_SOCKETIO ? "socketio" : "shardchat", cfg_rooms, cfg_members, cfg_senders, cfg_size, cfg_window, cfg_threads);
  printf("  \"setup_ok\": %s, \"connections_ready\": %d, \"setup_ms\": %.1f, \"warmup_s\": %.2f, \"window_s\": %.4f,\n",
         setup_ok ? "true" : "false", ready, (double)(t_ready - t0) / 1e6, cfg_warmup, wall);
  double wd = wall > 0 ? (double)tot.win_delivered / wall : 0;
  printf("  \"window_delivered\": %llu, \"delivered_per_s\": %.1f, \"window_sent\": %llu, \"sent_per_s\": %.1f, \"window_errors\": %llu,\n",
         (unsigned long long)tot.win_delivered, wd, (unsigned long long)tot.win_sent, wall > 0 ? (double)tot.win_sent / wall : 0,
         (unsigned long long)tot.win_errors);
  printf("  \"mode\": \"%s\", \"rate\": %.1f, \"offered_deliveries_per_s\": %.1f, \"window_skipped\": %llu, \"stall\": %d, \"stalled_delivered\": %llu, \"stalled_closed\": %llu,\n",
         cfg_idle_hold > 0 ? "idle" : cfg_churn ? "churn" : cfg_rate > 0 ? "open" : "closed", cfg_rate, cfg_rate * cfg_members,
         (unsigned long long)tot.win_skipped, cfg_stall, (unsigned long long)tot.stalled_delivered, (unsigned long long)tot.stalled_closed);
  printf("  \"idle\": {\"connections\": %d, \"server_rss_kb_before\": %ld, \"server_rss_kb_after\": %ld},\n", ready, rss0, rss1);
  printf("  \"churn\": {\"window_cycles\": %llu, \"cycles_per_s\": %.1f, \"cycles\": %llu},\n", (unsigned long long)tot.win_cycles,
         wall > 0 ? (double)tot.win_cycles / wall : 0, (unsigned long long)tot.cycles);
  printf("  \"window_reads\": %llu, \"deliveries_per_read\": %.2f, \"bytes_per_read\": %.0f,\n", (unsigned long long)tot.win_reads,
         tot.win_reads ? (double)tot.win_delivered / (double)tot.win_reads : 0, tot.win_reads ? (double)tot.win_read_bytes / (double)tot.win_reads : 0);
  printf("  \"latency_us\": {\"count\": %llu, \"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f},\n",
         (unsigned long long)tot.lat_count, tot.lat_count ? (double)tot.lat_sum_ns / (double)tot.lat_count / 1000.0 : -1,
         pct_us(hist, tot.lat_count, 0.5), pct_us(hist, tot.lat_count, 0.9), pct_us(hist, tot.lat_count, 0.99),
         pct_us(hist, tot.lat_count, 0.999), (double)tot.lat_max_ns / 1000.0);
  /* server CPU over the window */
  printf("  \"server\": {\"pid\": %d, \"cpu_s\": %.3f, \"threads\": [", cfg_server_pid, ps1->proc_s - ps0->proc_s);
  int first = 1;
  for (int k = 0; k < ps1->ntasks; k++) {
    double before = 0;
    for (int j = 0; j < ps0->ntasks; j++) if (ps0->tasks[j].tid == ps1->tasks[k].tid) before = ps0->tasks[j].cpu_s;
    double d = ps1->tasks[k].cpu_s - before;
    char comm[64];
    size_t o = 0;
    for (const char *q = ps1->tasks[k].comm; *q && o < sizeof comm - 2; q++) if (*q != '"' && *q != '\\') comm[o++] = *q;
    comm[o] = 0;
    printf("%s{\"tid\": %d, \"comm\": \"%s\", \"main\": %s, \"cpu_s\": %.3f}", first ? "" : ", ", ps1->tasks[k].tid, comm,
           ps1->tasks[k].tid == cfg_server_pid ? "true" : "false", d);
    first = 0;
  }
  printf("]},\n");
  printf("  \"cores\": [");
  first = 1;
  for (int k = 0; k < cs1.n; k++) {
    uint64_t tt = cs1.total[k] - cs0.total[k], bb = cs1.busy[k] - cs0.busy[k];
    printf("%s{\"cpu\": %d, \"busy_pct\": %.1f}", first ? "" : ", ", k, tt ? 100.0 * (double)bb / (double)tt : 0);
    first = 0;
  }
  printf("],\n");
  {
    /* busy time of all cores over the window, minus what the server and the generator were charged:
     * other processes, interrupts/softirqs not charged to a task (loopback TCP), kernel threads */
    double busy = 0;
    for (int k = 0; k < cs1.n; k++) busy += (double)(cs1.busy[k] - cs0.busy[k]) / clk_tck;
    double other = busy - (ps1->proc_s - ps0->proc_s) - (gen1 - gen0);
    printf("  \"machine\": {\"busy_core_s\": %.3f, \"unattributed_core_s\": %.3f, \"unattributed_pct_of_core\": %.1f},\n", busy, other,
           wall > 0 ? 100.0 * other / wall : 0);
  }
  printf("  \"generator\": {\"cpu_s\": %.3f, \"cpu_pct\": %.1f},\n", gen1 - gen0, wall > 0 ? 100.0 * (gen1 - gen0) / wall : 0);
  printf("  \"totals\": {\"sent\": %llu, \"pub_errors\": %llu, \"expected_deliveries\": %llu, \"delivered\": %llu, \"missing\": %lld,\n",
         (unsigned long long)tot.sent, (unsigned long long)tot.pub_errors, (unsigned long long)expected, (unsigned long long)tot.delivered,
         (long long)expected - (long long)tot.delivered);
  printf("    \"unanswered_pubs\": %lld,\n", unanswered);
  printf("    \"acks\": %llu, \"gaps\": %llu, \"repeats\": %llu, \"wrong_room\": %llu, \"seq_gaps\": %llu, \"presence\": %llu, \"hello\": %llu, \"joined\": %llu,\n",
         (unsigned long long)tot.acks, (unsigned long long)tot.gaps, (unsigned long long)tot.repeats, (unsigned long long)tot.wrong_room,
         (unsigned long long)tot.seq_gaps, (unsigned long long)tot.presence, (unsigned long long)tot.hello, (unsigned long long)tot.joined_frames);
  printf("    \"errors\": {\"overloaded\": %llu, \"rate_limited\": %llu, \"shutting_down\": %llu, \"other\": %llu},\n",
         (unsigned long long)tot.err_overloaded, (unsigned long long)tot.err_rate_limited, (unsigned long long)tot.err_shutting_down,
         (unsigned long long)tot.err_other);
  printf("    \"unknown_frames\": %llu, \"bad_frames\": %llu, \"text_frames\": %llu, \"pings\": %llu, \"conn_failures\": %llu,\n",
         (unsigned long long)tot.unknown, (unsigned long long)tot.bad_frames, (unsigned long long)tot.text_frames, (unsigned long long)tot.pings,
         (unsigned long long)tot.conn_failures);
  printf("    \"closed_by_server\": {");
  for (int k = 0; k < tot.n_close_codes; k++)
    printf("%s\"%d\": %llu", k ? ", " : "", tot.close_code[k], (unsigned long long)tot.close_count[k]);
  printf("}, \"inflight_after_drain\": %ld, \"drain_ms\": %.1f}\n", drain_left, drain_ms);
  printf("}\n");
  (void)cfg_cores;
  return setup_ok ? 0 : 1;
}
