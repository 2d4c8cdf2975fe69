/*
 * floor: the least a SIP server can do to answer OPTIONS, as a yardstick
 * for scripts/bench-compare (docs/performance.md, "The floor").
 *
 * One thread, one level-triggered epoll loop, OpenSSL 3. A UDP socket and a
 * TLS listener. Every request is framed by its Content-Length and answered
 * with a 200 OK that carries what SwiftSER's stateless OPTIONS answer
 * carries: the Via values (the top one with rport/received filled in,
 * RFC 3581 / RFC 3261 §18.2.1), From, To with a To tag added when absent,
 * Call-ID, CSeq, a Server field and Content-Length: 0. All replies made from
 * one read go out with one SSL_write (TLS) or one sendto per datagram (UDP).
 * No routing, no validation beyond framing: it is a floor, not a proxy.
 *
 *   cc -O2 -o floor floor.c -lssl -lcrypto
 *   floor --udp 127.0.0.1:5060 --tls 127.0.0.1:5061 --cert server.pem \
 *         --key server.key [--groups X25519:P-256:P-384] [--release-buffers]
 *
 * --release-buffers sets SSL_MODE_RELEASE_BUFFERS: an idle connection then
 * holds no TLS record buffers (less memory, a little more CPU per read).
 * Stops on SIGTERM or SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_MESSAGE 65536          /* a request larger than this closes the connection */
#define WORK_SIZE (4 * MAX_MESSAGE) /* leftover + one read's plaintext */
#define OUT_SIZE (256 * 1024)      /* replies of one read */
#define MAX_EVENTS 256
#define UDP_BURST 64               /* datagrams read per wake-up */

struct conn {
    SSL *ssl;
    int handshaken;
    char ip[INET6_ADDRSTRLEN];
    int port;
    char *left;       /* an incomplete request kept between reads (malloc'd only then) */
    size_t left_len;
    char *pending;    /* replies SSL_write could not take yet */
    size_t pending_len;
};

static struct conn **conns; /* by descriptor */
static int max_fds;
static int epfd, udp_fd = -1, tls_fd = -1;
static SSL_CTX *ctx;
static volatile sig_atomic_t stopping;
static char work[WORK_SIZE];
static char out[OUT_SIZE];
static uint64_t tag_counter;

static void on_signal(int s) { (void)s; stopping = 1; }

static void die(const char *what) { perror(what); exit(1); }


static void parse_hostport(const char *s, struct sockaddr_in *a) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) { fprintf(stderr, "bad address %s\n", s); exit(1); }
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); exit(1); }
}

/* Case-insensitive: does the header line start with one of the names (full or compact)? */
static int is_header(const char *line, size_t len, const char *full, char compact, size_t *value_at) {
    size_t n = strlen(full), i;
    if (len > n && strncasecmp(line, full, n) == 0) i = n;
    else if (compact && len > 1 && (line[0] | 0x20) == compact && (line[1] == ':' || line[1] == ' ' || line[1] == '\t')) i = 1;
    else return 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    if (i >= len || line[i] != ':') return 0;
    i++;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    *value_at = i;
    return 1;
}

static char *put(char *o, const char *s, size_t n) { memcpy(o, s, n); return o + n; }

/* The top Via with rport filled in (and received when the sent-by host is
 * not the source address), as SwiftSER and Kamailio answer it. */
static char *put_top_via(char *o, const char *line, size_t len, size_t value_at, const char *ip, int port) {
    const char *v = line + value_at, *end = line + len;
    const char *comma = memchr(v, ',', end - v);
    const char *first_end = comma ? comma : end;
    /* sent-by host: after "SIP/2.0/XXX" and spaces */
    const char *p = memchr(v, ' ', first_end - v);
    int same_host = 0;
    if (p) {
        while (p < first_end && *p == ' ') p++;
        const char *h = p;
        while (p < first_end && *p != ':' && *p != ';' && *p != ' ') p++;
        same_host = (size_t)(p - h) == strlen(ip) && memcmp(h, ip, p - h) == 0;
    }
    const char *rport = NULL;
    for (const char *s = v; s + 6 <= first_end; s++) {
        if (*s == ';' && strncasecmp(s, ";rport", 6) == 0 && (s + 6 == first_end || s[6] == ';' || s[6] == ',' || s[6] == ' ')) { rport = s + 6; break; }
    }
    if (rport) {
        o = put(o, line, rport - line);
        o += sprintf(o, "=%d", port);
        o = put(o, rport, first_end - rport);
    } else {
        o = put(o, line, first_end - line);
    }
    if (!same_host) o += sprintf(o, ";received=%s", ip);
    o = put(o, first_end, end - first_end);
    return put(o, "\r\n", 2);
}

/* Frames one request at buf[0..len). Returns its length, 0 when incomplete,
 * -1 when it cannot be a request we can frame. Writes the 200 OK to *o. */
static long answer(const char *buf, size_t len, char **o, const char *ip, int port, int stream) {
    const char *hend = memmem(buf, len, "\r\n\r\n", 4);
    if (!hend) return len > MAX_MESSAGE ? -1 : 0;
    size_t head = hend - buf + 4;
    long body = stream ? 0 : (long)(len - head);
    const char *vias[32]; size_t via_len[32], via_at[32]; int nvia = 0;
    const char *from = NULL, *to = NULL, *callid = NULL, *cseq = NULL;
    size_t from_len = 0, to_len = 0, to_at = 0, callid_len = 0, cseq_len = 0;
    int response = len >= 7 && memcmp(buf, "SIP/2.0", 7) == 0;
    const char *line = memchr(buf, '\n', head);
    if (!line) return -1;
    line++;
    while (line < hend + 2) {
        const char *nl = memchr(line, '\n', hend + 2 - line);
        if (!nl) break;
        size_t l = nl - line;
        if (l && line[l - 1] == '\r') l--;
        size_t at;
        if (is_header(line, l, "via", 'v', &at)) { if (nvia < 32) { vias[nvia] = line; via_len[nvia] = l; via_at[nvia++] = at; } }
        else if (is_header(line, l, "from", 'f', &at)) { from = line; from_len = l; }
        else if (is_header(line, l, "to", 't', &at)) { to = line; to_len = l; to_at = at; }
        else if (is_header(line, l, "call-id", 'i', &at)) { callid = line; callid_len = l; }
        else if (is_header(line, l, "cseq", 0, &at)) { cseq = line; cseq_len = l; }
        else if (is_header(line, l, "content-length", 'l', &at)) { body = strtol(line + at, NULL, 10); if (body < 0 || body > MAX_MESSAGE) return -1; }
        line = nl + 1;
    }
    if (stream && head + body > len) return head + body > WORK_SIZE / 2 ? -1 : 0;
    long total = stream ? (long)(head + body) : (long)len;
    if (response || !nvia || !from || !to || !callid || !cseq) return total; /* nothing to answer */
    char *p = *o;
    p = put(p, "SIP/2.0 200 OK\r\n", 16);
    p = put_top_via(p, vias[0], via_len[0], via_at[0], ip, port);
    for (int i = 1; i < nvia; i++) { p = put(p, vias[i], via_len[i]); p = put(p, "\r\n", 2); }
    p = put(p, from, from_len); p = put(p, "\r\n", 2);
    p = put(p, to, to_len);
    if (!memmem(to + to_at, to_len - to_at, ";tag=", 5)) {
        /* a 13-character tag, like SwiftSER's (random there, a counter here) */
        uint64_t t = ++tag_counter * 0x9E3779B97F4A7C15ull;
        static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
        char tag[16]; int n = 0;
        do { tag[n++] = digits[t % 36]; t /= 36; } while (t && n < 13);
        p = put(p, ";tag=", 5); p = put(p, tag, n);
    }
    p = put(p, "\r\n", 2);
    p = put(p, callid, callid_len); p = put(p, "\r\n", 2);
    p = put(p, cseq, cseq_len); p = put(p, "\r\n", 2);
    p = put(p, "Server: floor\r\nContent-Length: 0\r\n\r\n", 36);
    *o = p;
    return total;
}

static void close_conn(int fd) {
    struct conn *c = conns[fd];
    if (c) {
        SSL_free(c->ssl);
        free(c->left);
        free(c->pending);
        free(c);
        conns[fd] = NULL;
    }
    close(fd);
}

static void watch(int fd, uint32_t events, int op) {
    struct epoll_event ev = { .events = events, .data.fd = fd };
    if (epoll_ctl(epfd, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl");
}

/* Sends what is in out[0..n) (and anything still pending first). 0: closed. */
static int send_tls(int fd, struct conn *c, const char *data, size_t n) {
    if (c->pending) {
        char *joined = realloc(c->pending, c->pending_len + n);
        if (!joined) { close_conn(fd); return 0; }
        memcpy(joined + c->pending_len, data, n);
        c->pending = joined;
        c->pending_len += n;
        data = c->pending;
        n = c->pending_len;
    }
    if (n == 0) return 1;
    int w = SSL_write(c->ssl, data, (int)n);
    if (w > 0) {
        if (c->pending) { free(c->pending); c->pending = NULL; c->pending_len = 0; watch(fd, EPOLLIN, EPOLL_CTL_MOD); }
        return 1;
    }
    int e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        if (!c->pending) {
            c->pending = malloc(n);
            if (!c->pending) { close_conn(fd); return 0; }
            memcpy(c->pending, data, n);
            c->pending_len = n;
            watch(fd, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
        }
        return 1;
    }
    close_conn(fd);
    return 0;
}

static void on_tls(int fd, uint32_t events) {
    struct conn *c = conns[fd];
    if (!c) return;
    if (!c->handshaken) {
        int r = SSL_accept(c->ssl);
        if (r == 1) { c->handshaken = 1; }
        else {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) { watch(fd, EPOLLIN, EPOLL_CTL_MOD); return; }
            if (e == SSL_ERROR_WANT_WRITE) { watch(fd, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD); return; }
            close_conn(fd);
            return;
        }
    }
    if ((events & EPOLLOUT) && c->pending && !send_tls(fd, c, "", 0)) return;
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    /* the kept incomplete request first, then what one read brings */
    size_t len = 0;
    if (c->left) { memcpy(work, c->left, c->left_len); len = c->left_len; free(c->left); c->left = NULL; c->left_len = 0; }
    int closed = 0;
    do {
        int r = SSL_read(c->ssl, work + len, (int)(WORK_SIZE - len));
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) closed = 1;
            break;
        }
        len += r;
    } while (SSL_pending(c->ssl) > 0 && len < WORK_SIZE);
    char *o = out;
    size_t at = 0;
    while (at < len) {
        if (o - out > OUT_SIZE - MAX_MESSAGE - 1024) { /* full: send what is made so far */
            if (!send_tls(fd, c, out, o - out)) return;
            o = out;
        }
        while (at < len && (work[at] == '\r' || work[at] == '\n')) at++; /* keep-alives */
        if (at == len) break;
        long n = answer(work + at, len - at, &o, c->ip, c->port, 1);
        if (n < 0) { closed = 1; break; }
        if (n == 0) break;
        at += n;
    }
    if (!send_tls(fd, c, out, o - out)) return;
    if (closed) { close_conn(fd); return; }
    if (at < len) {
        c->left_len = len - at;
        c->left = malloc(c->left_len);
        if (!c->left) { close_conn(fd); return; }
        memcpy(c->left, work + at, c->left_len);
    }
}

static void on_accept(void) {
    for (;;) {
        struct sockaddr_in6 a; socklen_t al = sizeof a;
        int fd = accept4(tls_fd, (struct sockaddr *)&a, &al, SOCK_NONBLOCK);
        if (fd < 0) return;
        if (fd >= max_fds) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->ssl = SSL_new(ctx);
        if (!c->ssl) { free(c); close(fd); continue; }
        SSL_set_fd(c->ssl, fd);
        if (((struct sockaddr *)&a)->sa_family == AF_INET) {
            struct sockaddr_in *a4 = (struct sockaddr_in *)&a;
            inet_ntop(AF_INET, &a4->sin_addr, c->ip, sizeof c->ip);
            c->port = ntohs(a4->sin_port);
        } else {
            inet_ntop(AF_INET6, &a.sin6_addr, c->ip, sizeof c->ip);
            c->port = ntohs(a.sin6_port);
        }
        conns[fd] = c;
        watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static void on_udp(void) {
    for (int i = 0; i < UDP_BURST; i++) {
        struct sockaddr_in a; socklen_t al = sizeof a;
        ssize_t n = recvfrom(udp_fd, work, MAX_MESSAGE, 0, (struct sockaddr *)&a, &al);
        if (n <= 0) return;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
        char *o = out;
        if (answer(work, (size_t)n, &o, ip, ntohs(a.sin_port), 0) > 0 && o > out)
            sendto(udp_fd, out, o - out, 0, (struct sockaddr *)&a, al);
    }
}

int main(int argc, char **argv) {
    const char *udp = NULL, *tls = NULL, *cert = NULL, *key = NULL, *groups = "X25519:P-256:P-384";
    int release = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--udp") && i + 1 < argc) udp = argv[++i];
        else if (!strcmp(argv[i], "--tls") && i + 1 < argc) tls = argv[++i];
        else if (!strcmp(argv[i], "--cert") && i + 1 < argc) cert = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc) key = argv[++i];
        else if (!strcmp(argv[i], "--groups") && i + 1 < argc) groups = argv[++i];
        else if (!strcmp(argv[i], "--release-buffers")) release = 1;
        else { fprintf(stderr, "usage: floor [--udp IP:PORT] [--tls IP:PORT --cert PEM --key PEM] [--groups LIST] [--release-buffers]\n"); return 2; }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    max_fds = rl.rlim_cur > 1000000 ? 1000000 : (int)rl.rlim_cur;
    conns = calloc(max_fds, sizeof *conns);
    epfd = epoll_create1(0);
    if (!conns || epfd < 0) die("setup");
    if (udp) {
        struct sockaddr_in a; parse_hostport(udp, &a);
        udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (udp_fd < 0 || bind(udp_fd, (struct sockaddr *)&a, sizeof a) < 0) die("udp bind");
        watch(udp_fd, EPOLLIN, EPOLL_CTL_ADD);
    }
    if (tls) {
        if (!cert || !key) { fprintf(stderr, "--tls needs --cert and --key\n"); return 2; }
        ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
            || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1
            || SSL_CTX_set1_groups_list(ctx, groups) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
        SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | (release ? SSL_MODE_RELEASE_BUFFERS : 0));
        struct sockaddr_in a; parse_hostport(tls, &a);
        tls_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(tls_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (tls_fd < 0 || bind(tls_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(tls_fd, 1024) < 0) die("tls listen");
        watch(tls_fd, EPOLLIN, EPOLL_CTL_ADD);
    }
    if (udp_fd < 0 && tls_fd < 0) { fprintf(stderr, "nothing to listen on\n"); return 2; }
    struct epoll_event ev[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(epfd, ev, MAX_EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == udp_fd) on_udp();
            else if (fd == tls_fd) on_accept();
            else on_tls(fd, ev[i].events);
        }
    }
    for (int fd = 0; fd < max_fds; fd++) if (conns[fd]) close_conn(fd);
    SSL_CTX_free(ctx);
    return 0;
}
