/*
 * A stream echo over rsockets, as a C program writes one with <xrdma/rsocket.h>.
 *
 *   rs_echo server ADDR PORT            echoes each connection until its end of file
 *   rs_echo client ADDR PORT [N [SIZE]] sends N messages of SIZE bytes (100, 4096),
 *                                       checks each echo, prints "rs_echo: ok ..."
 *
 * The server serves one connection, then exits (so that a test can wait for it).
 * Exits 0 on success, 1 with a message saying what failed.
 */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xrdma/rsocket.h>

static int fail(const char *what)
{
	fprintf(stderr, "rs_echo: %s: %s\n", what, strerror(errno));
	return 1;
}

static int address(const char *ip, const char *port, struct sockaddr_in *sin)
{
	memset(sin, 0, sizeof *sin);
	sin->sin_family = AF_INET;
	sin->sin_port = htons((unsigned short) atoi(port));
	return inet_pton(AF_INET, ip, &sin->sin_addr) == 1 ? 0 : -1;
}

/* Sends or receives exactly len bytes. */
static int all(int fd, char *buf, size_t len, int sending)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = sending ? rsend(fd, buf + done, len - done, 0)
				    : rrecv(fd, buf + done, len - done, 0);
		if (n <= 0) {
			if (n == 0)
				errno = ECONNRESET;
			return -1;
		}
		done += (size_t) n;
	}
	return 0;
}

static int serve(struct sockaddr_in *sin)
{
	char buf[65536];
	int on = 1, lfd, fd;
	ssize_t n;

	lfd = rsocket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		return fail("rsocket");
	if (rsetsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on))
		return fail("rsetsockopt SO_REUSEADDR");
	if (rbind(lfd, (struct sockaddr *) sin, sizeof *sin))
		return fail("rbind");
	if (rlisten(lfd, 8))
		return fail("rlisten");
	printf("rs_echo: listening\n");
	fflush(stdout);
	fd = raccept(lfd, NULL, NULL);
	if (fd < 0)
		return fail("raccept");
	while ((n = rrecv(fd, buf, sizeof buf, 0)) > 0) {
		if (all(fd, buf, (size_t) n, 1))
			return fail("rsend");
	}
	if (n < 0)
		return fail("rrecv");
	rclose(fd);
	rclose(lfd);
	printf("rs_echo: served\n");
	return 0;
}

static int client(struct sockaddr_in *sin, int count, size_t size)
{
	char *out = malloc(size), *in = malloc(size);
	int on = 1, fd, i;
	size_t j;

	if (!out || !in)
		return fail("malloc");
	fd = rsocket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return fail("rsocket");
	if (rsetsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on))
		return fail("rsetsockopt TCP_NODELAY");
	if (rconnect(fd, (struct sockaddr *) sin, sizeof *sin))
		return fail("rconnect");
	for (i = 0; i < count; i++) {
		for (j = 0; j < size; j++)
			out[j] = (char) (i * 31 + j);
		if (all(fd, out, size, 1))
			return fail("rsend");
		if (all(fd, in, size, 0))
			return fail("rrecv");
		if (memcmp(in, out, size)) {
			fprintf(stderr, "rs_echo: echo %d differs\n", i);
			return 1;
		}
	}
	if (rshutdown(fd, SHUT_WR))
		return fail("rshutdown");
	if (rrecv(fd, in, 1, 0) != 0)
		return fail("end of file after the echoes");
	rclose(fd);
	free(out);
	free(in);
	printf("rs_echo: ok %d messages of %zu bytes\n", count, size);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sin;

	if (argc < 4 || address(argv[2], argv[3], &sin)) {
		fprintf(stderr, "usage: rs_echo server|client ADDR PORT [N [SIZE]]\n");
		return 2;
	}
	if (!strcmp(argv[1], "server"))
		return serve(&sin);
	return client(&sin, argc > 4 ? atoi(argv[4]) : 100,
		      argc > 5 ? (size_t) atoi(argv[5]) : 4096);
}
