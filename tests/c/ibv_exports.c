/*
 * ibv_exports: the libibverbs calls beyond the core verbs, linked against libxrdma.so.
 *
 * Each answers as libibverbs does on a RoCE device: the device index, P_Key indexes,
 * the extended GID queries (RoCE v2, the interface's index), an address handle made from
 * a received UD completion (a reply through it arrives), ibv_rereg_mr (the re-registered
 * region carries a send), the Ethernet address behind a GID, the fork helpers, the rate
 * and kernel-ABI conversions and the sysfs path. What xrdma cannot do (multicast, ECE,
 * imports, dma-buf, ibv_qp_ex, legacy providers) fails cleanly with libibverbs' errno;
 * the Rust side checks that each said so on stderr.
 *
 *   cc -std=c99 -Wall -Wextra -Werror ibv_exports.c -L<dir> -lxrdma -Wl,-rpath,<dir>
 *   XRDMA_IFACE=lo XRDMA_BACKEND=udp XRDMA_UDP_PORT=<port> ./ibv_exports
 *
 * Prints "ibv_exports: ok" and exits 0, or says what failed and exits 1.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <infiniband/sa.h>
#include <infiniband/verbs.h>
#include <net/if.h>
#include <rdma/ib_user_sa.h>
#include <rdma/ib_user_verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_PROG "ibv_exports"
#include "check.h"

/* Exported by libibverbs (marshall.h, driver.h, the legacy driver API), not in its
 * installed headers. */
void ibv_copy_ah_attr_from_kern(struct ibv_ah_attr *dst, struct ib_uverbs_ah_attr *src);
void ibv_copy_qp_attr_from_kern(struct ibv_qp_attr *dst, struct ib_uverbs_qp_attr *src);
void ibv_copy_path_rec_from_kern(struct ibv_sa_path_rec *dst, struct ib_user_path_rec *src);
void ibv_copy_path_rec_to_kern(struct ib_user_path_rec *dst, struct ibv_sa_path_rec *src);
void ibv_register_driver(const char *name, void *init_func);
const char *ibv_get_sysfs_path(void);
int ibv_query_gid_type(struct ibv_context *context, uint8_t port_num, unsigned int index,
		       unsigned int *type);
int ibv_dontfork_range(void *base, size_t size);
int ibv_dofork_range(void *base, size_t size);

#define QKEY 0x11111111u
#define GRH_LEN 40
#define PAYLOAD 64
#define BUF_LEN 8192
#define TIMEOUT_MS 5000

struct ud {
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *a, *b;
	struct ibv_mr *mr;
	unsigned char *buf;
};

static struct ibv_qp *ud_qp(struct ud *u)
{
	struct ibv_qp_init_attr init;
	struct ibv_qp_attr attr;
	struct ibv_qp *qp;

	memset(&init, 0, sizeof(init));
	init.send_cq = u->cq;
	init.recv_cq = u->cq;
	init.qp_type = IBV_QPT_UD;
	init.cap.max_send_wr = 4;
	init.cap.max_recv_wr = 4;
	init.cap.max_send_sge = 1;
	init.cap.max_recv_sge = 1;
	qp = check_ptr(ibv_create_qp(u->pd, &init), "ibv_create_qp");
	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_INIT;
	attr.port_num = 1;
	attr.qkey = QKEY;
	check_rc(ibv_modify_qp(qp, &attr,
			       IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY),
		 "ibv_modify_qp(INIT)");
	attr.qp_state = IBV_QPS_RTR;
	check_rc(ibv_modify_qp(qp, &attr, IBV_QP_STATE), "ibv_modify_qp(RTR)");
	attr.qp_state = IBV_QPS_RTS;
	check_rc(ibv_modify_qp(qp, &attr, IBV_QP_STATE | IBV_QP_SQ_PSN), "ibv_modify_qp(RTS)");
	return qp;
}

static void post_recv(struct ud *u, struct ibv_qp *qp, size_t off, uint64_t wr_id)
{
	struct ibv_sge sge = { (uintptr_t)(u->buf + off), GRH_LEN + PAYLOAD, u->mr->lkey };
	struct ibv_recv_wr wr, *bad = NULL;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = wr_id;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	check_rc(ibv_post_recv(qp, &wr, &bad), "ibv_post_recv");
}

static void post_send(struct ibv_qp *qp, struct ibv_ah *ah, uint32_t qpn, void *from,
		      uint32_t lkey, uint64_t wr_id)
{
	struct ibv_sge sge = { (uintptr_t)from, PAYLOAD, lkey };
	struct ibv_send_wr wr, *bad = NULL;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = wr_id;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = IBV_WR_SEND;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.wr.ud.ah = ah;
	wr.wr.ud.remote_qpn = qpn;
	wr.wr.ud.remote_qkey = QKEY;
	check_rc(ibv_post_send(qp, &wr, &bad), "ibv_post_send");
}

/* Polls until the completion `wr_id` is in; returns it. */
static struct ibv_wc wait_wc(struct ibv_cq *cq, uint64_t wr_id)
{
	long long deadline = now_ms() + TIMEOUT_MS;
	struct ibv_wc wc;

	while (now_ms() < deadline) {
		int n = ibv_poll_cq(cq, 1, &wc);

		if (n < 0)
			fail("ibv_poll_cq: %d", n);
		if (n == 1 && wc.wr_id == wr_id) {
			if (wc.status != IBV_WC_SUCCESS)
				fail("completion %llu: %s", (unsigned long long)wr_id,
				     ibv_wc_status_str(wc.status));
			return wc;
		}
	}
	fail("no completion %llu within %d ms", (unsigned long long)wr_id, TIMEOUT_MS);
	return wc;
}

static void check_indexes_and_gids(struct ibv_context *ctx, struct ibv_device *dev)
{
	struct ibv_gid_entry entry, table[8];
	struct ibv_port_attr port;
	union ibv_gid gid;
	unsigned int type = 99;
	ssize_t n;
	int i, want = 0;

	if (ibv_get_device_index(dev) != 0)
		fail("ibv_get_device_index: %d, want 0", ibv_get_device_index(dev));

	if (ibv_get_pkey_index(ctx, 1, htobe16(0xffff)) != 0)
		fail("ibv_get_pkey_index(0xffff): want 0");
	errno = 0;
	if (ibv_get_pkey_index(ctx, 1, htobe16(0x7fff)) != -1 || errno != ENOENT)
		fail("ibv_get_pkey_index(0x7fff): want -1 ENOENT, errno %d", errno);
	if (ibv_get_pkey_index(ctx, 2, htobe16(0xffff)) != -1)
		fail("ibv_get_pkey_index(port 2): want -1");

	check_rc(ibv_query_gid(ctx, 1, 0, &gid), "ibv_query_gid");
	check_rc(ibv_query_gid_ex(ctx, 1, 0, &entry, 0), "ibv_query_gid_ex");
	if (memcmp(entry.gid.raw, gid.raw, 16) != 0 || entry.gid_index != 0 ||
	    entry.port_num != 1)
		fail("ibv_query_gid_ex: not GID 0 of port 1");
	if (entry.gid_type != IBV_GID_TYPE_ROCE_V2)
		fail("ibv_query_gid_ex: type %u, want RoCE v2", entry.gid_type);
	if (entry.ndev_ifindex != if_nametoindex("lo"))
		fail("ibv_query_gid_ex: ifindex %u, want lo's %u", entry.ndev_ifindex,
		     if_nametoindex("lo"));
	if (ibv_query_gid_ex(ctx, 1, 0, &entry, 1) != EINVAL)
		fail("ibv_query_gid_ex(flags 1): want EINVAL");
	if (ibv_query_gid_ex(ctx, 1, 1000, &entry, 0) == 0)
		fail("ibv_query_gid_ex(index 1000) succeeded");
	if (ibv_query_gid_type(ctx, 1, 0, &type) != 0 || type != 1 /* sysfs RoCE v2 */)
		fail("ibv_query_gid_type: %u", type);

	check_rc(ibv_query_port(ctx, 1, &port), "ibv_query_port");
	for (i = 0; i < port.gid_tbl_len; i++) {
		union ibv_gid g;
		static const unsigned char zero[16];

		if (ibv_query_gid(ctx, 1, i, &g) == 0 && memcmp(g.raw, zero, 16) != 0)
			want++;
	}
	n = ibv_query_gid_table(ctx, table, 8, 0);
	if (n != want)
		fail("ibv_query_gid_table: %zd entries, want %d", n, want);
	if (memcmp(table[0].gid.raw, gid.raw, 16) != 0 ||
	    table[0].gid_type != IBV_GID_TYPE_ROCE_V2)
		fail("ibv_query_gid_table: entry 0 is not GID 0, RoCE v2");
	if (ibv_query_gid_table(ctx, table, 0, 0) != -EINVAL)
		fail("ibv_query_gid_table(room for none): want -EINVAL");
}

/* A UD message from A to B, then the reply through an AH made from its completion. */
static void check_ah_from_wc(struct ibv_context *ctx, struct ud *u, union ibv_gid *gid)
{
	struct ibv_ah_attr attr;
	struct ibv_ah *ah, *back;
	struct ibv_wc wc;
	struct ibv_grh *grh;

	memset(&attr, 0, sizeof(attr));
	attr.is_global = 1;
	attr.grh.dgid = *gid;
	attr.grh.hop_limit = 64;
	attr.port_num = 1;
	ah = check_ptr(ibv_create_ah(u->pd, &attr), "ibv_create_ah");

	post_recv(u, u->b, 0, 10);
	memset(u->buf + 4096, 0x5a, PAYLOAD);
	post_send(u->a, ah, u->b->qp_num, u->buf + 4096, u->mr->lkey, 11);
	wait_wc(u->cq, 11);
	wc = wait_wc(u->cq, 10);
	if (!(wc.wc_flags & IBV_WC_GRH) || wc.src_qp != u->a->qp_num)
		fail("the UD receive has no GRH or the wrong source QP");
	grh = (struct ibv_grh *)u->buf;

	memset(&attr, 0xff, sizeof(attr));
	check_rc(ibv_init_ah_from_wc(ctx, 1, &wc, grh, &attr) ? errno : 0,
		 "ibv_init_ah_from_wc");
	if (!attr.is_global || memcmp(attr.grh.dgid.raw, gid->raw, 16) != 0 ||
	    attr.grh.sgid_index != 0 || attr.port_num != 1)
		fail("ibv_init_ah_from_wc: not a global route back to GID 0");

	back = check_ptr(ibv_create_ah_from_wc(u->pd, &wc, grh, 1), "ibv_create_ah_from_wc");
	post_recv(u, u->a, 2048, 12);
	memset(u->buf + 4096, 0xa5, PAYLOAD);
	post_send(u->b, back, wc.src_qp, u->buf + 4096, u->mr->lkey, 13);
	wait_wc(u->cq, 13);
	wait_wc(u->cq, 12);
	if (u->buf[2048 + GRH_LEN] != 0xa5)
		fail("the reply through ibv_create_ah_from_wc did not arrive intact");

	/* A GRH that is neither RoCE v2 over IPv4 nor over IPv6. */
	memset(grh, 0, sizeof(*grh));
	if (ibv_init_ah_from_wc(ctx, 1, &wc, grh, &attr) != -1 || errno != EPROTONOSUPPORT)
		fail("ibv_init_ah_from_wc(zero GRH): want -1 EPROTONOSUPPORT");
	if (ibv_create_ah_from_wc(u->pd, &wc, grh, 1) != NULL)
		fail("ibv_create_ah_from_wc(zero GRH) succeeded");

	check_rc(ibv_destroy_ah(back), "ibv_destroy_ah");
	check_rc(ibv_destroy_ah(ah), "ibv_destroy_ah");
}

/* ibv_rereg_mr moves an MR to another buffer, which then carries a send. */
static void check_rereg(struct ud *u, union ibv_gid *gid)
{
	unsigned char *other = check_ptr(calloc(1, 4096), "calloc");
	struct ibv_mr *mr = check_ptr(ibv_reg_mr(u->pd, u->buf + 4096, 4096,
						 IBV_ACCESS_LOCAL_WRITE),
				      "ibv_reg_mr");
	struct ibv_ah_attr attr;
	struct ibv_ah *ah;

	errno = 0;
	if (ibv_rereg_mr(mr, 1 << 7, NULL, NULL, 0, 0) != IBV_REREG_MR_ERR_INPUT ||
	    errno != EINVAL)
		fail("ibv_rereg_mr(bad flags): want IBV_REREG_MR_ERR_INPUT, EINVAL");
	if (ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, NULL, NULL, 0, 0) !=
	    IBV_REREG_MR_ERR_INPUT)
		fail("ibv_rereg_mr(no range): want IBV_REREG_MR_ERR_INPUT");
	check_rc(ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, NULL, other, 4096, 0),
		 "ibv_rereg_mr");
	if (mr->addr != other || mr->length != 4096 || mr->pd != u->pd)
		fail("ibv_rereg_mr: the MR does not describe the new buffer");

	memset(&attr, 0, sizeof(attr));
	attr.is_global = 1;
	attr.grh.dgid = *gid;
	attr.port_num = 1;
	ah = check_ptr(ibv_create_ah(u->pd, &attr), "ibv_create_ah");
	memset(other, 0x3c, PAYLOAD);
	post_recv(u, u->b, 0, 20);
	post_send(u->a, ah, u->b->qp_num, other, mr->lkey, 21);
	wait_wc(u->cq, 21);
	wait_wc(u->cq, 20);
	if (u->buf[GRH_LEN] != 0x3c || u->buf[GRH_LEN + PAYLOAD - 1] != 0x3c)
		fail("the send from the re-registered buffer did not arrive intact");

	check_rc(ibv_destroy_ah(ah), "ibv_destroy_ah");
	check_rc(ibv_dereg_mr(mr), "ibv_dereg_mr");
	free(other);
}

static void check_l2(struct ibv_context *ctx, union ibv_gid *gid)
{
	struct ibv_ah_attr attr;
	uint8_t mac[6] = { 1, 1, 1, 1, 1, 1 };
	uint16_t vid = 0;
	int rc;

	memset(&attr, 0, sizeof(attr));
	attr.is_global = 1;
	attr.grh.dgid = *gid;
	attr.port_num = 1;
	rc = ibv_resolve_eth_l2_from_gid(ctx, &attr, mac, &vid);
	if (rc != 0)
		fail("ibv_resolve_eth_l2_from_gid(lo): %d", rc);
	/* lo does no address resolution: its own, all-zero address, as the kernel says. */
	if (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5] || vid != 0xffff)
		fail("ibv_resolve_eth_l2_from_gid(lo): not lo's zero address, no VLAN");
	attr.grh.sgid_index = 200;
	if (ibv_resolve_eth_l2_from_gid(ctx, &attr, mac, &vid) >= 0)
		fail("ibv_resolve_eth_l2_from_gid(bad sgid_index) succeeded");
}

static void check_pure_helpers(void)
{
	struct ib_uverbs_ah_attr kah;
	struct ib_uverbs_qp_attr kqp;
	struct ib_user_path_rec kpath, kback;
	struct ibv_ah_attr ah;
	struct ibv_qp_attr qp;
	struct ibv_sa_path_rec path;
	const char *sysfs;

	check_rc(ibv_fork_init(), "ibv_fork_init");
	if (ibv_is_fork_initialized() != IBV_FORK_UNNEEDED)
		fail("ibv_is_fork_initialized: want IBV_FORK_UNNEEDED");
	if (ibv_dontfork_range(&kah, sizeof(kah)) != 0 ||
	    ibv_dofork_range(&kah, sizeof(kah)) != 0)
		fail("ibv_dontfork_range / ibv_dofork_range: want 0");

	if (ibv_rate_to_mult(IBV_RATE_10_GBPS) != 4 || mult_to_ibv_rate(4) != IBV_RATE_10_GBPS ||
	    ibv_rate_to_mult(IBV_RATE_14_GBPS) != -1 || mult_to_ibv_rate(3) != IBV_RATE_MAX)
		fail("ibv_rate_to_mult / mult_to_ibv_rate");
	if (ibv_rate_to_mbps(IBV_RATE_25_GBPS) != 25781 ||
	    mbps_to_ibv_rate(53125) != IBV_RATE_50_GBPS || ibv_rate_to_mbps(IBV_RATE_MAX) != -1 ||
	    mbps_to_ibv_rate(1) != IBV_RATE_MAX)
		fail("ibv_rate_to_mbps / mbps_to_ibv_rate");

	memset(&kah, 0, sizeof(kah));
	kah.grh.dgid[15] = 7;
	kah.grh.flow_label = 0x12345;
	kah.grh.sgid_index = 2;
	kah.grh.hop_limit = 9;
	kah.dlid = 0x42;
	kah.is_global = 1;
	kah.port_num = 1;
	memset(&ah, 0xff, sizeof(ah));
	ibv_copy_ah_attr_from_kern(&ah, &kah);
	if (ah.grh.dgid.raw[15] != 7 || ah.grh.flow_label != 0x12345 ||
	    ah.grh.sgid_index != 2 || ah.grh.hop_limit != 9 || ah.dlid != 0x42 ||
	    ah.is_global != 1 || ah.port_num != 1 || ah.sl != 0)
		fail("ibv_copy_ah_attr_from_kern");

	memset(&kqp, 0, sizeof(kqp));
	kqp.qkey = 0x1234;
	kqp.rq_psn = 77;
	kqp.max_send_wr = 33;
	kqp.ah_attr.dlid = 5;
	kqp.timeout = 14;
	memset(&qp, 0, sizeof(qp));
	qp.qp_state = IBV_QPS_RTS; /* not copied: stays */
	ibv_copy_qp_attr_from_kern(&qp, &kqp);
	if (qp.qkey != 0x1234 || qp.rq_psn != 77 || qp.cap.max_send_wr != 33 ||
	    qp.ah_attr.dlid != 5 || qp.timeout != 14 || qp.qp_state != IBV_QPS_RTS)
		fail("ibv_copy_qp_attr_from_kern");

	memset(&kpath, 0, sizeof(kpath));
	kpath.sgid[0] = 0xfe;
	kpath.pkey = htobe16(0xffff);
	kpath.mtu = IBV_MTU_1024;
	kpath.numb_path = 1;
	kpath.packet_life_time = 18;
	ibv_copy_path_rec_from_kern(&path, &kpath);
	if (path.sgid.raw[0] != 0xfe || path.pkey != htobe16(0xffff) ||
	    path.mtu != IBV_MTU_1024 || path.numb_path != 1 || path.packet_life_time != 18)
		fail("ibv_copy_path_rec_from_kern");
	memset(&kback, 0xff, sizeof(kback));
	ibv_copy_path_rec_to_kern(&kback, &path);
	if (memcmp(kback.sgid, kpath.sgid, 16) != 0 || kback.pkey != kpath.pkey ||
	    kback.mtu != kpath.mtu || kback.packet_life_time != 18)
		fail("ibv_copy_path_rec_to_kern");

	sysfs = ibv_get_sysfs_path();
	if (sysfs == NULL || strcmp(sysfs, "/sys") != 0)
		fail("ibv_get_sysfs_path: %s, want /sys", sysfs ? sysfs : "(null)");
}

static void check_unsupported(struct ibv_context *ctx, struct ud *u)
{
	union ibv_gid mgid;
	struct ibv_ece ece;

	memset(&mgid, 0, sizeof(mgid));
	mgid.raw[0] = 0xff;
	if (ibv_attach_mcast(u->b, &mgid, 0) != EOPNOTSUPP ||
	    ibv_detach_mcast(u->b, &mgid, 0) != EOPNOTSUPP)
		fail("ibv_attach_mcast / ibv_detach_mcast: want EOPNOTSUPP");
	memset(&ece, 0, sizeof(ece));
	if (ibv_query_ece(u->a, &ece) != EOPNOTSUPP)
		fail("ibv_query_ece: want EOPNOTSUPP");
	ece.vendor_id = 0x15b3;
	if (ibv_set_ece(u->a, &ece) != EOPNOTSUPP)
		fail("ibv_set_ece: want EOPNOTSUPP");
	errno = 0;
	if (ibv_qp_to_qp_ex(u->a) != NULL || errno != EOPNOTSUPP)
		fail("ibv_qp_to_qp_ex: want NULL, EOPNOTSUPP");
	if (ibv_query_qp_data_in_order(u->a, IBV_WR_RDMA_WRITE, 0) != 0)
		fail("ibv_query_qp_data_in_order: want 0");
	errno = 0;
	if (ibv_import_device(ctx->cmd_fd) != NULL || errno != EOPNOTSUPP)
		fail("ibv_import_device: want NULL, EOPNOTSUPP");
	errno = 0;
	if (ibv_import_pd(ctx, 1) != NULL || errno != EOPNOTSUPP)
		fail("ibv_import_pd: want NULL, EOPNOTSUPP");
	errno = 0;
	if (ibv_import_mr(u->pd, 1) != NULL || errno != EOPNOTSUPP)
		fail("ibv_import_mr: want NULL, EOPNOTSUPP");
	errno = 0;
	if (ibv_import_dm(ctx, 1) != NULL || errno != EOPNOTSUPP)
		fail("ibv_import_dm: want NULL, EOPNOTSUPP");
	ibv_unimport_pd(u->pd);
	ibv_unimport_mr(u->mr);
	ibv_unimport_dm(NULL);
	errno = 0;
	if (ibv_reg_dmabuf_mr(u->pd, 0, 4096, 0, -1, IBV_ACCESS_LOCAL_WRITE) != NULL ||
	    errno != EOPNOTSUPP)
		fail("ibv_reg_dmabuf_mr: want NULL, EOPNOTSUPP");
	ibv_register_driver("legacy", NULL);
}

int main(void)
{
	struct ibv_device **list;
	struct ibv_context *ctx;
	union ibv_gid gid;
	struct ud u;
	int num;

	list = ibv_get_device_list(&num);
	if (list == NULL || num != 1)
		fail("ibv_get_device_list: want one device");
	ctx = check_ptr(ibv_open_device(list[0]), "ibv_open_device");
	check_rc(ibv_query_gid(ctx, 1, 0, &gid), "ibv_query_gid");

	memset(&u, 0, sizeof(u));
	u.pd = check_ptr(ibv_alloc_pd(ctx), "ibv_alloc_pd");
	u.cq = check_ptr(ibv_create_cq(ctx, 16, NULL, NULL, 0), "ibv_create_cq");
	u.buf = check_ptr(calloc(1, BUF_LEN), "calloc");
	u.mr = check_ptr(ibv_reg_mr(u.pd, u.buf, BUF_LEN, IBV_ACCESS_LOCAL_WRITE), "ibv_reg_mr");
	u.a = ud_qp(&u);
	u.b = ud_qp(&u);

	check_indexes_and_gids(ctx, list[0]);
	check_ah_from_wc(ctx, &u, &gid);
	check_rereg(&u, &gid);
	check_l2(ctx, &gid);
	check_pure_helpers();
	check_unsupported(ctx, &u);

	check_rc(ibv_destroy_qp(u.a), "ibv_destroy_qp");
	check_rc(ibv_destroy_qp(u.b), "ibv_destroy_qp");
	check_rc(ibv_dereg_mr(u.mr), "ibv_dereg_mr");
	check_rc(ibv_destroy_cq(u.cq), "ibv_destroy_cq");
	check_rc(ibv_dealloc_pd(u.pd), "ibv_dealloc_pd");
	check_rc(ibv_close_device(ctx), "ibv_close_device");
	ibv_free_device_list(list);
	free(u.buf);
	printf("ibv_exports: ok\n");
	return 0;
}
