/*
 * preload_stress: an ordinary socket program for the preload library's stress test.
 *
 *   preload_stress server ADDR PORT [prefork]
 *       echoes every connection, each in a thread of its own, until killed; prints
 *       "listening" once it listens. With "prefork", a child forked after listen accepts
 *       and echoes, and dies with its parent.
 *   preload_stress client ADDR PORT THREADS ROUNDS FORKS
 *       THREADS threads each open ROUNDS connections one after another; each sends a
 *       pseudo-random stream of pseudo-random length (non-blocking, under poll or, for
 *       every other connection, an epoll set it joined before connecting; with write, send
 *       or writev), half-closes, and checks that the echo is byte for byte what it sent. Meanwhile the main thread forks FORKS children: before each fork it opens
 *       a connection, which the child uses as above and the parent closes; then the child
 *       opens three connections of its own the same way and exits. Last, writes to a
 *       connection the server closed must fail with EPIPE and raise SIGPIPE, and a
 *       connection's number closed with close_range must serve the file opened next.
 *       Prints "ok: N connections, B bytes" (the parent's) and exits 0, or says what went
 *       wrong and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_STREAM (256 * 1024)
#define CHUNK 65536

static struct sockaddr_in server_addr;
static int rounds;
static long long total_bytes;
static int total_connections;
static pthread_mutex_t totals = PTHREAD_MUTEX_INITIALIZER;

static _Noreturn void fail(const char *what)
{
    fprintf(stderr, "preload_stress[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    exit(1);
}

/* The byte at `i` of stream `seed`: both ends of the check compute it. */
static uint8_t stream_byte(uint64_t seed, size_t i)
{
    uint64_t x = seed ^ (i * 0x9e3779b97f4a7c15ULL);
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 32;
    return (uint8_t)x;
}

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Writes all of `buf`, whatever blocking mode `fd` is in. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            poll(&p, 1, -1);
            continue;
        }
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[CHUNK];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(fd, buf, (size_t)n) < 0)
            break;
    }
    close(fd);
    return NULL;
}

/* Listens on ADDR:PORT and echoes every connection in a thread of its own; with
 * `prefork`, a forked child accepts and echoes instead (dying with its parent), and the
 * parent only waits. */
static _Noreturn void serve(const char *addr, int port, int prefork)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (l < 0)
        fail("socket");
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1)
        fail("address");
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0)
        fail("bind");
    if (listen(l, 128) < 0)
        fail("listen");
    if (prefork) {
        pid_t pid = fork();
        if (pid < 0)
            fail("fork");
        if (pid > 0) {
            printf("listening\n");
            fflush(stdout);
            for (;;)
                pause();
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            exit(1);
    } else {
        printf("listening\n");
        fflush(stdout);
    }
    for (;;) {
        pthread_t t;
        int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            fail("accept");
        }
        if (pthread_create(&t, NULL, echo, (void *)(intptr_t)fd) != 0)
            fail("pthread_create");
        pthread_detach(t);
    }
}

/* A new connection to the server; if `may_epoll`, every other one joins an epoll set
 * (returned in *ep, else -1) before it connects. */
static int open_connection(uint64_t *rng, int may_epoll, int *ep)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT };
    *ep = may_epoll && next_random(rng) % 2 ? epoll_create1(EPOLL_CLOEXEC) : -1;
    if (fd < 0)
        fail("socket");
    if (*ep >= 0 && epoll_ctl(*ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        fail("epoll_ctl");
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0)
        fail("connect");
    return fd;
}

/* Sends stream `seed` of `len` bytes on `fd` (waiting in `ep` if it is a set, else in poll)
 * and checks its echo, then closes both. 0 if it came back whole. */
static int exchange(int fd, int ep, uint64_t seed, size_t len, uint64_t *rng)
{
    static __thread char out[CHUNK], in[CHUNK];
    size_t sent = 0, got = 0;
    int wr_open = 1;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT };
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        fail("fcntl");
    while (got < len) {
        struct pollfd p = { .fd = fd, .events = POLLIN | (wr_open ? POLLOUT : 0) };
        int ready;
        if (ep >= 0) {
            struct epoll_event out_ev;
            ready = epoll_wait(ep, &out_ev, 1, 30000);
            p.revents = ready > 0 ? (short)out_ev.events : 0;
        } else {
            ready = poll(&p, 1, 30000);
        }
        if (ready <= 0) {
            fprintf(stderr, "preload_stress: no progress for 30 s (%zu of %zu sent, %zu back)\n",
                    sent, len, got);
            return -1;
        }
        if (wr_open && (p.revents & POLLOUT)) {
            size_t want = len - sent < CHUNK ? len - sent : CHUNK;
            ssize_t n;
            want = 1 + next_random(rng) % want;
            for (size_t i = 0; i < want; i++)
                out[i] = (char)stream_byte(seed, sent + i);
            switch (next_random(rng) % 3) {
            case 0:
                n = write(fd, out, want);
                break;
            case 1:
                n = send(fd, out, want, MSG_NOSIGNAL);
                break;
            default: {
                struct iovec iov[2] = { { out, want / 2 }, { out + want / 2, want - want / 2 } };
                n = writev(fd, iov, 2);
            }
            }
            if (n < 0 && errno != EAGAIN)
                fail("write");
            if (n > 0)
                sent += (size_t)n;
            if (sent == len) {
                if (shutdown(fd, SHUT_WR) < 0)
                    fail("shutdown");
                wr_open = 0;
                ev.events = EPOLLIN;
                if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0)
                    fail("epoll_ctl");
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            /* FIONREAD: what has arrived, no more than is still to come; a read then takes
             * at least that much (up to its buffer). */
            int queued;
            if (ioctl(fd, FIONREAD, &queued) < 0)
                fail("ioctl(FIONREAD)");
            if (queued < 0 || (size_t)queued > len - got) {
                fprintf(stderr, "preload_stress: FIONREAD says %d with %zu to come\n", queued,
                        len - got);
                return -1;
            }
            ssize_t n = next_random(rng) % 2 ? read(fd, in, sizeof in) : recv(fd, in, sizeof in, 0);
            if (n < 0 && errno == EAGAIN)
                continue;
            if (n < 0)
                fail("read");
            size_t least = (size_t)queued < sizeof in ? (size_t)queued : sizeof in;
            if ((size_t)n < least) {
                fprintf(stderr, "preload_stress: FIONREAD said %d, a read took %zd\n", queued, n);
                return -1;
            }
            if (n == 0) {
                fprintf(stderr, "preload_stress: end of stream after %zu of %zu bytes\n", got, len);
                return -1;
            }
            for (ssize_t i = 0; i < n; i++)
                if ((uint8_t)in[i] != stream_byte(seed, got + (size_t)i)) {
                    fprintf(stderr, "preload_stress[%d]: byte %zu of %zu differs\n", (int)getpid(),
                            got + (size_t)i, len);
                    return -1;
                }
            got += (size_t)n;
        }
    }
    if (close(fd) < 0 || (ep >= 0 && close(ep) < 0))
        fail("close");
    pthread_mutex_lock(&totals);
    total_bytes += (long long)len;
    total_connections++;
    pthread_mutex_unlock(&totals);
    return 0;
}

/* One connection: sends stream `seed` of `len` bytes and checks its echo. */
static int one_connection(uint64_t seed, size_t len, uint64_t *rng)
{
    int ep, fd = open_connection(rng, 1, &ep);
    return exchange(fd, ep, seed, len, rng);
}

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

/* A connection the server has closed: writing to it fails with EPIPE and raises SIGPIPE,
 * as TCP's does. Then close_range on a connection: its number, reused by an ordinary file,
 * is that file's. */
static void check_endings(void)
{
    uint64_t rng = 42;
    char buf[4096] = { 0 };
    int ep, fd = open_connection(&rng, 0, &ep);
    struct sigaction sa = { .sa_handler = on_sigpipe };
    ssize_t n = 1;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) < 0)
        fail("sigaction");
    /* The server echoes until our end of stream, then closes. */
    if (shutdown(fd, SHUT_WR) < 0)
        fail("shutdown");
    while ((n = read(fd, buf, sizeof buf)) > 0)
        ;
    if (n < 0)
        fail("read to the end");
    for (int i = 0; i < 10000 && n >= 0; i++) {
        n = write(fd, buf, sizeof buf);
        if (n >= 0)
            usleep(1000);
    }
    if (n >= 0 || errno != EPIPE || sigpipes == 0) {
        fprintf(stderr, "preload_stress: writes after the peer closed: %zd, %s, %d SIGPIPE\n", n,
                strerror(errno), (int)sigpipes);
        exit(1);
    }
    close(fd);
    fd = open_connection(&rng, 0, &ep);
    if (close_range((unsigned)fd, (unsigned)fd, 0) < 0)
        fail("close_range");
    int file = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (file != fd) {
        fprintf(stderr, "preload_stress: /dev/null opened as %d, not %d\n", file, fd);
        exit(1);
    }
    if (read(file, buf, sizeof buf) != 0)
        fail("reading /dev/null where a connection was");
    close(file);
    printf("endings: ok\n");
}

static void *client_thread(void *arg)
{
    uint64_t rng = 0x2545f4914f6cdd1dULL * (uint64_t)((intptr_t)arg + 1);
    for (int r = 0; r < rounds; r++) {
        uint64_t seed = next_random(&rng);
        size_t len = 1 + next_random(&rng) % MAX_STREAM;
        if (one_connection(seed, len, &rng) < 0)
            exit(1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "server") == 0)
        serve(argv[2], atoi(argv[3]), argc == 5 && strcmp(argv[4], "prefork") == 0);
    if (argc != 7 || strcmp(argv[1], "client") != 0) {
        fprintf(stderr,
                "usage: %s server ADDR PORT [prefork] | client ADDR PORT THREADS ROUNDS FORKS\n",
                argv[0]);
        return 2;
    }
    int threads = atoi(argv[4]), forks = atoi(argv[6]);
    pthread_t t[64];
    rounds = atoi(argv[5]);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &server_addr.sin_addr) != 1 || threads < 1 || threads > 64)
        fail("arguments");
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, client_thread, (void *)(intptr_t)i) != 0)
            fail("pthread_create");
    for (int f = 0; f < forks; f++) {
        uint64_t rng = 0x9e3779b97f4a7c15ULL + (uint64_t)f;
        /* A connection the child inherits and uses, waiting in poll (an epoll set would be
         * the parent's too); the parent closes its copy. */
        int ep, inherited = open_connection(&rng, 0, &ep);
        pid_t pid = fork();
        int status;
        if (pid < 0)
            fail("fork");
        if (pid == 0) {
            /* The inherited connection, then the child's own, while the parent's threads
             * go on. */
            if (exchange(inherited, ep, next_random(&rng), 1 + next_random(&rng) % MAX_STREAM,
                         &rng) < 0)
                exit(1);
            for (int r = 0; r < 3; r++)
                if (one_connection(next_random(&rng), 1 + next_random(&rng) % MAX_STREAM, &rng) < 0)
                    exit(1);
            exit(0);
        }
        if (close(inherited) < 0 || (ep >= 0 && close(ep) < 0))
            fail("close");
        if (waitpid(pid, &status, 0) < 0)
            fail("waitpid");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "preload_stress: child %d failed (status %d)\n", f, status);
            return 1;
        }
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    check_endings();
    printf("ok: %d connections, %lld bytes\n", total_connections, total_bytes);
    return 0;
}
