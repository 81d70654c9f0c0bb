/*
 * xrdma's own calls, next to the libibverbs, librdmacm and rsocket ones that libxrdma
 * exports (see <xrdma/rsocket.h>): its version, its configuration in code rather than
 * in the environment, and its counters.
 */
#ifndef XRDMA_XRDMA_H
#define XRDMA_XRDMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, as "MAJOR.MINOR.PATCH". */
const char *xrdma_version(void);

/*
 * Sets what XRDMA_IFACE, XRDMA_BACKEND and XRDMA_UDP_PORT would: the interfaces to use
 * (comma-separated; NULL or "" for every interface a route reaches), the backend ("xdp",
 * "udp", or NULL to use xdp where the process may, else udp) and the RoCEv2 UDP port (0
 * for 4791). Call it before any other xrdma call; 0 on success, else -1 and errno:
 * EINVAL for an unknown backend, EBUSY once the settings are in force.
 */
int xrdma_configure(const char *ifaces, const char *backend, uint16_t udp_port);

/* The process's counters, summed over the interfaces opened so far. */
struct xrdma_stats {
	uint64_t rx_packets;       /* RoCEv2 packets received */
	uint64_t rx_bytes;         /* their transport bytes */
	uint64_t tx_packets;       /* RoCEv2 packets sent */
	uint64_t tx_bytes;         /* their transport bytes */
	uint64_t rx_dropped;       /* received and dropped: malformed, bad ICRC, not ours */
	uint64_t tx_dropped;       /* refused by the medium (no route, too big) */
	uint64_t rs_protocol_errors; /* rsocket connections a peer broke the protocol on */
	uint64_t rs_dgram_dropped; /* rsocket datagrams dropped for a malformed header */
};

/*
 * Fills `stats` (whose size the caller passes, so that older callers keep working when
 * fields are added): 0, or -1 and errno EFAULT for NULL.
 */
int xrdma_get_stats(struct xrdma_stats *stats, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* XRDMA_XRDMA_H */
