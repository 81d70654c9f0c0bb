/*
 * An event loop over an rsocket and a pipe together, with repoll (rsocket's epoll):
 * lines written into the pipe are forwarded to an echo server (rs_echo server), and the
 * echoes read back as they come, until the pipe ends and the server has echoed it all.
 *
 *   rs_epoll ADDR PORT [LINES]   prints "rs_epoll: ok ..." when every byte came back
 */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <xrdma/rsocket.h>

static int fail(const char *what)
{
	fprintf(stderr, "rs_epoll: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	static char sent[1 << 16], got[1 << 16];
	struct epoll_event ev, events[4];
	size_t nsent = 0, ngot = 0;
	int pipefd[2], fd, ep, lines, i, n, k, pipe_open = 1;
	struct sockaddr_in sin;

	if (argc < 3) {
		fprintf(stderr, "usage: rs_epoll ADDR PORT [LINES]\n");
		return 2;
	}
	lines = argc > 3 ? atoi(argv[3]) : 1000;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short) atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1)
		return 2;

	/* The pipe's producer: all its lines, then its end (they fit in a pipe's buffer). */
	if (pipe(pipefd))
		return fail("pipe");
	for (i = 0; i < lines && nsent < sizeof sent / 2; i++) {
		char line[32];
		int len = snprintf(line, sizeof line, "line %d\n", i);
		if (write(pipefd[1], line, (size_t) len) != len)
			return fail("write pipe");
		memcpy(sent + nsent, line, (size_t) len);
		nsent += (size_t) len;
	}
	close(pipefd[1]);

	fd = rsocket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return fail("rsocket");
	if (rconnect(fd, (struct sockaddr *) &sin, sizeof sin))
		return fail("rconnect");
	ep = repoll_create(0);
	if (ep < 0)
		return fail("repoll_create");
	ev.events = EPOLLIN;
	ev.data.fd = fd;
	if (repoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		return fail("repoll_ctl rsocket");
	ev.data.fd = pipefd[0];
	if (repoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &ev))
		return fail("repoll_ctl pipe");

	for (;;) {
		n = repoll_wait(ep, events, 4, 10000);
		if (n < 0)
			return fail("repoll_wait");
		if (n == 0) {
			fprintf(stderr, "rs_epoll: nothing for 10 s (%zu of %zu bytes back)\n", ngot, nsent);
			return 1;
		}
		for (k = 0; k < n; k++) {
			if (events[k].data.fd == pipefd[0] && pipe_open) {
				char buf[512];
				ssize_t r = read(pipefd[0], buf, sizeof buf);
				if (r < 0)
					return fail("read pipe");
				if (r == 0) {
					/* The pipe ended: so does what we send. */
					repoll_ctl(ep, EPOLL_CTL_DEL, pipefd[0], NULL);
					pipe_open = 0;
					if (rshutdown(fd, SHUT_WR))
						return fail("rshutdown");
					continue;
				}
				for (ssize_t off = 0; off < r;) {
					ssize_t w = rsend(fd, buf + off, (size_t) (r - off), 0);
					if (w < 0)
						return fail("rsend");
					off += w;
				}
			} else if (events[k].data.fd == fd) {
				ssize_t r = rrecv(fd, got + ngot, sizeof got - ngot, MSG_DONTWAIT);
				if (r < 0 && errno != EAGAIN)
					return fail("rrecv");
				if (r == 0) {
					if (ngot != nsent || memcmp(got, sent, nsent)) {
						fprintf(stderr, "rs_epoll: %zu bytes back of %zu, or different\n",
							ngot, nsent);
						return 1;
					}
					close(ep);
					close(pipefd[0]);
					rclose(fd);
					printf("rs_epoll: ok %d lines, %zu bytes\n", lines, nsent);
					return 0;
				}
				if (r > 0)
					ngot += (size_t) r;
			}
		}
	}
}
