/*
 * Built against the installed <xrdma/rsocket.h> and <xrdma/xrdma.h> with pkg-config, as
 * a C (or C++) user builds: the calls that need no network answer as documented, and
 * bad arguments get the errno rsocket and Linux give. Exits 0, or 1 naming what failed.
 */
#define _DEFAULT_SOURCE /* SO_PRIORITY under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <xrdma/rsocket.h>
#include <xrdma/xrdma.h>

static int failures;

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "api_check: %s (errno %d: %s)\n", what, errno, strerror(errno));
		failures++;
	}
}

static int fails_with(long ret, int err)
{
	return ret == -1 && errno == err;
}

int main(void)
{
	struct xrdma_stats stats;
	struct sockaddr_in sin;
	socklen_t len;
	int fd, pipefd[2], val, ep;
	char byte = 0;

	check(xrdma_version() && strlen(xrdma_version()) > 0, "xrdma_version");
	check(xrdma_get_stats(&stats, sizeof stats) == 0, "xrdma_get_stats");
	check(fails_with(xrdma_get_stats(NULL, sizeof stats), EFAULT), "xrdma_get_stats(NULL)");
	check(fails_with(xrdma_configure(NULL, "carrier-pigeon", 0), EINVAL), "xrdma_configure(bad backend)");

	check(fails_with(rsocket(AF_UNIX, SOCK_STREAM, 0), ENOTSUP), "rsocket(AF_UNIX)");
	check(fails_with(rsocket(AF_INET, SOCK_RAW, 0), ENOTSUP), "rsocket(SOCK_RAW)");
	check(fails_with(rclose(100000), EBADF), "rclose(not open)");
	check(pipe(pipefd) == 0, "pipe");
	check(fails_with(rsend(pipefd[1], &byte, 1, 0), ENOTSOCK), "rsend(pipe)");

	fd = rsocket(AF_INET, SOCK_STREAM, 0);
	check(fd >= 0, "rsocket(AF_INET, SOCK_STREAM)");
	check(fails_with(rsend(fd, NULL, 1, 0), EFAULT), "rsend(NULL)");
	check(fails_with(rrecv(fd, &byte, 1, 0), ENOTCONN), "rrecv(unconnected)");
	check(fails_with(raccept(fd, NULL, NULL), EINVAL), "raccept(not listening)");
	check(fails_with(rshutdown(fd, SHUT_RDWR), ENOTCONN), "rshutdown(unconnected)");

	val = 1024;
	check(rsetsockopt(fd, SOL_RDMA, RDMA_SQSIZE, &val, sizeof val) == 0, "RDMA_SQSIZE set");
	val = 0;
	len = sizeof val;
	check(rgetsockopt(fd, SOL_RDMA, RDMA_SQSIZE, &val, &len) == 0 && val == 1024 &&
	      len == sizeof val, "RDMA_SQSIZE get");
	val = 1;
	check(rsetsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &val, sizeof val) == 0, "TCP_NODELAY set");
	val = 0;
	len = sizeof val;
	check(rgetsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &val, &len) == 0 && val == 1, "TCP_NODELAY get");
	check(fails_with(rsetsockopt(fd, SOL_SOCKET, SO_RCVBUF, &val, 1), EINVAL), "short optlen");
	check(fails_with(rsetsockopt(fd, SOL_SOCKET, SO_PRIORITY, &val, sizeof val), ENOTSUP),
	      "an option rsocket does not take");
	len = sizeof val;
	check(rgetsockopt(fd, SOL_SOCKET, SO_TYPE, &val, &len) == 0 && val == SOCK_STREAM, "SO_TYPE");

	check(rfcntl(fd, F_SETFL, O_NONBLOCK) == 0, "F_SETFL O_NONBLOCK");
	check((rfcntl(fd, F_GETFL) & O_NONBLOCK) != 0, "F_GETFL");
	check(fails_with(rfcntl(fd, F_DUPFD, 0), ENOTSUP), "F_DUPFD");

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(7471);
	sin.sin_addr.s_addr = htonl(0xc6120001); /* 198.18.0.1 */
	check(rbind(fd, (struct sockaddr *) &sin, sizeof sin) == 0, "rbind");
	check(fails_with(rbind(fd, (struct sockaddr *) &sin, sizeof sin), EINVAL), "rbind twice");
	memset(&sin, 0, sizeof sin);
	len = sizeof sin;
	check(rgetsockname(fd, (struct sockaddr *) &sin, &len) == 0 && len == sizeof sin &&
	      ntohs(sin.sin_port) == 7471, "rgetsockname");
	len = sizeof sin;
	check(fails_with(rgetpeername(fd, (struct sockaddr *) &sin, &len), ENOTCONN), "rgetpeername");

	ep = repoll_create(0);
	check(ep >= 0, "repoll_create");
	check(close(ep) == 0, "close(repoll)");
	check(rclose(fd) == 0, "rclose");
	check(fails_with(rclose(fd), EBADF), "rclose twice");
	close(pipefd[0]);
	close(pipefd[1]);

	if (failures)
		return 1;
	printf("api_check: ok (xrdma %s)\n", xrdma_version());
	return 0;
}
