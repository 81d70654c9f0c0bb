/*
 * xrdma's rsocket API: the calls of rdma-core's <rdma/rsocket.h>, with the same names,
 * types and option constants, implemented by libxrdma (-lxrdma, or `pkg-config xrdma`).
 *
 * Each call behaves as its socket counterpart (rsocket as socket(2), rrecv as recv(2),
 * and so on): it returns -1 and sets errno on failure (riowrite returns (size_t)-1).
 * The descriptors rsocket and raccept return are kernel descriptors that poll, select
 * and epoll see as readable and writable when the rsocket is; close them with rclose.
 * SOCK_STREAM sockets are reliable connections (RDMA RC queue pairs); SOCK_DGRAM sockets
 * carry datagrams of at most 2032 bytes over UD queue pairs.
 */
#ifndef XRDMA_RSOCKET_H
#define XRDMA_RSOCKET_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/select.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <poll.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Making, naming and closing sockets. */
int rsocket(int domain, int type, int protocol);
int rbind(int socket, const struct sockaddr *addr, socklen_t addrlen);
int rlisten(int socket, int backlog);
int raccept(int socket, struct sockaddr *addr, socklen_t *addrlen);
int rconnect(int socket, const struct sockaddr *addr, socklen_t addrlen);
int rshutdown(int socket, int how);
int rclose(int socket);
int rgetpeername(int socket, struct sockaddr *addr, socklen_t *addrlen);
int rgetsockname(int socket, struct sockaddr *addr, socklen_t *addrlen);

/* Reading and writing. */
ssize_t rrecv(int socket, void *buf, size_t len, int flags);
ssize_t rrecvfrom(int socket, void *buf, size_t len, int flags,
                  struct sockaddr *src_addr, socklen_t *addrlen);
ssize_t rrecvmsg(int socket, struct msghdr *msg, int flags);
ssize_t rsend(int socket, const void *buf, size_t len, int flags);
ssize_t rsendto(int socket, const void *buf, size_t len, int flags,
                const struct sockaddr *dest_addr, socklen_t addrlen);
ssize_t rsendmsg(int socket, const struct msghdr *msg, int flags);
ssize_t rread(int socket, void *buf, size_t count);
ssize_t rreadv(int socket, const struct iovec *iov, int iovcnt);
ssize_t rwrite(int socket, const void *buf, size_t count);
ssize_t rwritev(int socket, const struct iovec *iov, int iovcnt);

/* Waiting on rsockets and ordinary descriptors together. */
int rpoll(struct pollfd *fds, nfds_t nfds, int timeout);
int rselect(int nfds, fd_set *readfds, fd_set *writefds,
            fd_set *exceptfds, struct timeval *timeout);
int repoll_create(int flags);
int repoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
int repoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);

/* Options: SOL_SOCKET, IPPROTO_TCP, and the RDMA level below (set before rconnect, or
 * on a listener for the connections it accepts). */
#define SOL_RDMA 0x10000
enum {
	RDMA_SQSIZE,    /* send queue entries */
	RDMA_RQSIZE,    /* receive queue entries */
	RDMA_INLINE,    /* bytes sent without a copy into the send ring */
	RDMA_IOMAPSIZE, /* entries the peer may riomap into */
	RDMA_ROUTE      /* not taken by xrdma (ENOTSUP) */
};
int rsetsockopt(int socket, int level, int optname,
                const void *optval, socklen_t optlen);
int rgetsockopt(int socket, int level, int optname,
                void *optval, socklen_t *optlen);
/* F_GETFL, F_SETFL (O_NONBLOCK), F_GETFD, F_SETFD. */
int rfcntl(int socket, int cmd, ... /* arg */);

/* Direct placement: the peer riowrites into a buffer riomapped here. */
off_t riomap(int socket, void *buf, size_t len, int prot, int flags, off_t offset);
int riounmap(int socket, void *buf, size_t len);
size_t riowrite(int socket, const void *buf, size_t count, off_t offset, int flags);

#ifdef __cplusplus
}
#endif

#endif /* XRDMA_RSOCKET_H */
