/*
 * c_echo: the reference echo server for bench/compare.sh.
 *
 *     gcc -O2 -o c_echo bench/c_echo.c && ./c_echo 127.0.0.1:11007
 *
 * A bench fixture, not part of the library: the fastest plain design for
 * echo traffic, so that packet's echo_server is compared with something a
 * good C programmer would write.
 *
 * - One thread, one epoll instance, LEVEL-TRIGGERED. With level triggering
 *   one read per readiness is enough and costs no extra EAGAIN read: if
 *   more than the buffer was queued, the next epoll_wait reports the socket
 *   again. (Edge triggering would need a read until EAGAIN, or the "short
 *   read means drained" rule packet uses.)
 * - Per readiness: one read(2) into one shared 64 KiB buffer and one
 *   write(2) of what was read, straight from that buffer.
 * - Only when a write is short does the connection get a pending buffer
 *   (malloc'd, exactly the unsent bytes) and EPOLLOUT interest; it stops
 *   reading meanwhile (EPOLLIN off), which is the server's backpressure.
 *   When the pending bytes are written the buffer is freed and interest
 *   goes back to EPOLLIN: one epoll_ctl each way, only on short writes.
 * - Non-blocking sockets from accept4(SOCK_NONBLOCK|SOCK_CLOEXEC), accepted
 *   until EAGAIN; TCP_NODELAY on each; SO_REUSEADDR on the listener.
 * - Connection state is an array indexed by descriptor; close(2) removes a
 *   descriptor from the epoll set.
 *
 * Prints "listening on ADDR:PORT" once ready.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF_SIZE (64 * 1024)
#define MAX_EVENTS 1024

struct conn {
    char *pending; /* unsent bytes, only after a short write */
    size_t off, len;
};

static struct conn *conns;
static size_t nconns;
static int ep;
static char buf[READ_BUF_SIZE];

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static struct conn *conn_of(int fd)
{
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct conn *c = realloc(conns, n * sizeof *c);
        if (!c)
            die("realloc");
        memset(c + nconns, 0, (n - nconns) * sizeof *c);
        conns = c;
        nconns = n;
    }
    return &conns[fd];
}

static void set_interest(int fd, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0)
        die("epoll_ctl MOD");
}

static void close_conn(int fd)
{
    struct conn *c = &conns[fd];
    free(c->pending);
    c->pending = NULL;
    c->off = c->len = 0;
    close(fd);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("accept4"); /* EMFILE etc.: retried on the next wait */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_of(fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            perror("epoll_ctl ADD");
            close(fd);
        }
    }
}

/* Writes the pending bytes; back to reading once they are all gone. */
static void on_writable(int fd, struct conn *c)
{
    ssize_t n = write(fd, c->pending + c->off, c->len - c->off);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            close_conn(fd);
        return;
    }
    c->off += (size_t)n;
    if (c->off == c->len) {
        free(c->pending);
        c->pending = NULL;
        c->off = c->len = 0;
        set_interest(fd, EPOLLIN);
    }
}

static void on_readable(int fd, struct conn *c)
{
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            close_conn(fd);
        return;
    }
    ssize_t w = write(fd, buf, (size_t)n);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            close_conn(fd);
            return;
        }
        w = 0;
    }
    if (w < n) {
        c->len = (size_t)(n - w);
        c->off = 0;
        c->pending = malloc(c->len);
        if (!c->pending)
            die("malloc");
        memcpy(c->pending, buf + w, c->len);
        set_interest(fd, EPOLLOUT);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: c_echo ADDR:PORT\n");
        return 2;
    }
    char host[64];
    const char *colon = strrchr(argv[1], ':');
    if (!colon || (size_t)(colon - argv[1]) >= sizeof host) {
        fprintf(stderr, "c_echo: expected ADDR:PORT, got %s\n", argv[1]);
        return 2;
    }
    memcpy(host, argv[1], (size_t)(colon - argv[1]));
    host[colon - argv[1]] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "c_echo: bad IPv4 address %s\n", host);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl listener");
    printf("listening on %s\n", argv[1]);
    fflush(stdout);

    static struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            unsigned ev = events[i].events;
            if (fd == lfd) {
                accept_all(lfd);
                continue;
            }
            struct conn *c = &conns[fd];
            if (c->pending) {
                if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_writable(fd, c);
            } else if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(fd, c);
            }
        }
    }
}
