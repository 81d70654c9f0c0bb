/*
 * A datagram ping over rsockets (<xrdma/rsocket.h>): datagrams may be lost, so the
 * client waits for each answer with rpoll and sends again after a timeout.
 *
 *   rs_dgram_ping server ADDR PORT      answers each datagram with itself, until "quit"
 *   rs_dgram_ping client ADDR PORT [N]  N pings (100), each answered, then "quit";
 *                                       prints "rs_dgram_ping: ok ..."
 */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xrdma/rsocket.h>

static int fail(const char *what)
{
	fprintf(stderr, "rs_dgram_ping: %s: %s\n", what, strerror(errno));
	return 1;
}

static int address(const char *ip, const char *port, struct sockaddr_in *sin)
{
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	sin->sin_port = htons((unsigned short) atoi(port));
	return inet_pton(AF_INET, ip, &sin->sin_addr) == 1 ? 0 : -1;
}

static int serve(struct sockaddr_in *sin)
{
	struct sockaddr_in from;
	socklen_t len;
	char buf[2048];
	ssize_t n;
	int fd;

	fd = rsocket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return fail("rsocket");
	if (rbind(fd, (struct sockaddr *) sin, sizeof *sin))
		return fail("rbind");
	printf("rs_dgram_ping: listening\n");
	fflush(stdout);
	for (;;) {
		len = sizeof from;
		n = rrecvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *) &from, &len);
		if (n < 0)
			return fail("rrecvfrom");
		if (rsendto(fd, buf, (size_t) n, 0, (struct sockaddr *) &from, len) != n)
			return fail("rsendto");
		if (n == 4 && !memcmp(buf, "quit", 4))
			break;
	}
	rclose(fd);
	printf("rs_dgram_ping: served\n");
	return 0;
}

/* Sends msg until the same bytes come back (1 s between tries, at most 10 tries). */
static int exchange(int fd, const char *msg, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[2048];
	int tries;
	ssize_t n;

	for (tries = 0; tries < 10; tries++) {
		if (rsend(fd, msg, len, 0) != (ssize_t) len)
			return fail("rsend");
		while (rpoll(&p, 1, 1000) == 1) {
			n = rrecv(fd, buf, sizeof buf, MSG_DONTWAIT);
			if (n == (ssize_t) len && !memcmp(buf, msg, len))
				return 0;
			if (n < 0 && errno != EAGAIN)
				return fail("rrecv");
		}
	}
	fprintf(stderr, "rs_dgram_ping: no answer to %.*s after 10 tries\n", (int) len, msg);
	return 1;
}

static int client(struct sockaddr_in *sin, int count)
{
	char msg[64];
	int fd, i, len;

	fd = rsocket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return fail("rsocket");
	if (rconnect(fd, (struct sockaddr *) sin, sizeof *sin))
		return fail("rconnect");
	for (i = 0; i < count; i++) {
		len = snprintf(msg, sizeof msg, "ping %d", i);
		if (exchange(fd, msg, (size_t) len))
			return 1;
	}
	if (exchange(fd, "quit", 4))
		return 1;
	rclose(fd);
	printf("rs_dgram_ping: ok %d pings\n", count);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sin;

	if (argc < 4 || address(argv[2], argv[3], &sin)) {
		fprintf(stderr, "usage: rs_dgram_ping server|client ADDR PORT [N]\n");
		return 2;
	}
	if (!strcmp(argv[1], "server"))
		return serve(&sin);
	return client(&sin, argc > 4 ? atoi(argv[4]) : 100);
}
