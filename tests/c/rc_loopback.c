/*
 * rc_loopback: a plain libibverbs program, linked against libxrdma.so.
 *
 * In one process: two RC QPs on one CQ, connected to each other through GID 0 (the
 * device's own address) with INIT, RTR and RTS as ibv_rc_pingpong does it. QP A then does
 * each RC operation on QP B's memory and checks the completions and the bytes: SEND,
 * RDMA WRITE with immediate, RDMA READ, compare-and-swap (one that matches, one that does
 * not), fetch-and-add and an inline SEND. Also checks the device's atomic capability, what ibv_query_qp
 * says of the read/atomic limits, and that an unaligned atomic is EINVAL with *bad_wr set.
 *
 *   cc -std=c99 -Wall -Wextra -Werror rc_loopback.c -L<dir> -lxrdma -Wl,-rpath,<dir>
 *   XRDMA_IFACE=lo XRDMA_BACKEND=udp XRDMA_UDP_PORT=<port> ./rc_loopback
 *
 * Prints "rc_loopback: ok" and exits 0, or says what failed and exits 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_PROG "rc_loopback"
#include "check.h"

#define BUF_LEN 8192
#define MSG 3000 /* three packets at the 1024-byte MTU */
#define RD_ATOMIC 4
#define TIMEOUT_MS 5000

struct end {
	struct ibv_qp *qp;
	struct ibv_mr *mr;
	uint64_t *buf; /* 8-aligned, for atomics */
};

static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_cq *cq)
{
	struct ibv_qp_init_attr init;

	memset(&init, 0, sizeof(init));
	init.send_cq = cq;
	init.recv_cq = cq;
	init.qp_type = IBV_QPT_RC;
	init.sq_sig_all = 1;
	init.cap.max_send_wr = 8;
	init.cap.max_recv_wr = 8;
	init.cap.max_send_sge = 1;
	init.cap.max_recv_sge = 1;
	init.cap.max_inline_data = 64;
	return check_ptr(ibv_create_qp(pd, &init), "ibv_create_qp(RC)");
}

/* RESET -> INIT -> RTR -> RTS towards `peer`, PSN 0x1234 both ways. */
static void connect_qp(struct ibv_qp *qp, struct ibv_qp *peer, union ibv_gid *gid)
{
	struct ibv_qp_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_INIT;
	attr.port_num = 1;
	attr.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
			       IBV_ACCESS_REMOTE_ATOMIC;
	check_rc(ibv_modify_qp(qp, &attr,
			       IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
				       IBV_QP_ACCESS_FLAGS),
		 "ibv_modify_qp(INIT)");

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_RTR;
	attr.path_mtu = IBV_MTU_1024;
	attr.dest_qp_num = peer->qp_num;
	attr.rq_psn = 0x1234;
	attr.max_dest_rd_atomic = RD_ATOMIC;
	attr.min_rnr_timer = 12;
	attr.ah_attr.is_global = 1;
	attr.ah_attr.grh.dgid = *gid;
	attr.ah_attr.grh.hop_limit = 1;
	attr.ah_attr.port_num = 1;
	check_rc(ibv_modify_qp(qp, &attr,
			       IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
				       IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
				       IBV_QP_MAX_DEST_RD_ATOMIC |
				       IBV_QP_MIN_RNR_TIMER),
		 "ibv_modify_qp(RTR)");

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_RTS;
	attr.timeout = 14;
	attr.retry_cnt = 7;
	attr.rnr_retry = 7;
	attr.sq_psn = 0x1234;
	attr.max_rd_atomic = RD_ATOMIC;
	check_rc(ibv_modify_qp(qp, &attr,
			       IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
				       IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
				       IBV_QP_MAX_QP_RD_ATOMIC),
		 "ibv_modify_qp(RTS)");
}

/* Completions polled while waiting for another: both QPs share the CQ, so a receive may
 * complete before the send that caused it (whose ACK is still on its way). */
static struct ibv_wc stash[8];
static int stashed;

/* Waits for the completion of `wr_id`; checks its status, opcode and length. */
static struct ibv_wc expect_wc(struct ibv_cq *cq, uint64_t wr_id,
			       enum ibv_wc_opcode opcode, uint32_t byte_len,
			       const char *what)
{
	struct ibv_wc wc;
	long long deadline = now_ms() + TIMEOUT_MS;
	int i, n;

	for (;;) {
		for (i = 0; i < stashed; i++) {
			if (stash[i].wr_id == wr_id) {
				wc = stash[i];
				stash[i] = stash[--stashed];
				goto found;
			}
		}
		n = ibv_poll_cq(cq, 1, &wc);
		if (n < 0)
			fail("%s: ibv_poll_cq returned %d", what, n);
		if (n == 1) {
			if (wc.wr_id == wr_id)
				break;
			if (stashed == (int)(sizeof(stash) / sizeof(stash[0])))
				fail("%s: too many other completions", what);
			stash[stashed++] = wc;
		}
		if (now_ms() > deadline)
			fail("%s: no completion within %d ms", what, TIMEOUT_MS);
	}
found:
	if (wc.status != IBV_WC_SUCCESS)
		fail("%s: %s", what, ibv_wc_status_str(wc.status));
	if (wc.opcode != opcode || wc.byte_len != byte_len)
		fail("%s: opcode %d byte_len %u, want %d %u", what, (int)wc.opcode,
		     wc.byte_len, (int)opcode, byte_len);
	return wc;
}

static void post(struct ibv_qp *qp, struct ibv_send_wr *wr, const char *what)
{
	struct ibv_send_wr *bad = NULL;

	check_rc(ibv_post_send(qp, wr, &bad), what);
}

/* A send work request of `opcode` from `len` bytes at `off` in `e`'s buffer. */
static struct ibv_send_wr request(struct end *e, struct ibv_sge *sge, uint64_t id,
				  enum ibv_wr_opcode opcode, size_t off, uint32_t len)
{
	struct ibv_send_wr wr;

	sge->addr = (uintptr_t)e->buf + off;
	sge->length = len;
	sge->lkey = e->mr->lkey;
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = id;
	wr.opcode = opcode;
	wr.sg_list = sge;
	wr.num_sge = 1;
	return wr;
}

int main(void)
{
	struct ibv_device **list;
	struct ibv_context *ctx;
	struct ibv_device_attr dev;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	union ibv_gid gid;
	struct end a, b;
	struct ibv_sge sge, rsge;
	struct ibv_send_wr wr, *bad;
	struct ibv_recv_wr rwr, *rbad;
	struct ibv_qp_attr qattr;
	struct ibv_qp_init_attr qinit;
	struct ibv_wc wc;
	unsigned char *ab, *bb;
	uint64_t remote;
	int num, i;

	list = check_ptr(ibv_get_device_list(&num), "ibv_get_device_list");
	if (num != 1)
		fail("%d devices, want 1", num);
	ctx = check_ptr(ibv_open_device(list[0]), "ibv_open_device");
	check_rc(ibv_query_device(ctx, &dev), "ibv_query_device");
	if (dev.atomic_cap != IBV_ATOMIC_GLOB)
		fail("atomic_cap %d, want IBV_ATOMIC_GLOB", (int)dev.atomic_cap);
	if (dev.max_qp_rd_atom < RD_ATOMIC || dev.max_qp_init_rd_atom < RD_ATOMIC)
		fail("max_qp_rd_atom %d, max_qp_init_rd_atom %d", dev.max_qp_rd_atom,
		     dev.max_qp_init_rd_atom);
	check_rc(ibv_query_gid(ctx, 1, 0, &gid), "ibv_query_gid");
	pd = check_ptr(ibv_alloc_pd(ctx), "ibv_alloc_pd");
	cq = check_ptr(ibv_create_cq(ctx, 32, NULL, NULL, 0), "ibv_create_cq");

	for (i = 0; i < 2; i++) {
		struct end *e = i == 0 ? &a : &b;

		check_rc(posix_memalign((void **)&e->buf, 8, BUF_LEN), "posix_memalign");
		memset(e->buf, 0, BUF_LEN);
		e->mr = check_ptr(ibv_reg_mr(pd, e->buf, BUF_LEN,
					     IBV_ACCESS_LOCAL_WRITE |
						     IBV_ACCESS_REMOTE_WRITE |
						     IBV_ACCESS_REMOTE_READ |
						     IBV_ACCESS_REMOTE_ATOMIC),
				  "ibv_reg_mr");
		e->qp = create_qp(pd, cq);
	}
	connect_qp(a.qp, b.qp, &gid);
	connect_qp(b.qp, a.qp, &gid);
	check_rc(ibv_query_qp(a.qp, &qattr,
			      IBV_QP_STATE | IBV_QP_AV | IBV_QP_DEST_QPN |
				      IBV_QP_PATH_MTU | IBV_QP_MAX_QP_RD_ATOMIC |
				      IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_TIMEOUT,
			      &qinit),
		 "ibv_query_qp");
	if (qattr.qp_state != IBV_QPS_RTS || qattr.max_rd_atomic != RD_ATOMIC ||
	    qattr.max_dest_rd_atomic != RD_ATOMIC || qattr.dest_qp_num != b.qp->qp_num ||
	    qattr.path_mtu != IBV_MTU_1024 || qattr.timeout != 14 ||
	    !qattr.ah_attr.is_global ||
	    memcmp(&qattr.ah_attr.grh.dgid, &gid, sizeof(gid)) != 0)
		fail("ibv_query_qp: state %d max_rd_atomic %d max_dest_rd_atomic %d "
		     "dest_qp_num %u path_mtu %d timeout %d is_global %d",
		     (int)qattr.qp_state, (int)qattr.max_rd_atomic,
		     (int)qattr.max_dest_rd_atomic, qattr.dest_qp_num,
		     (int)qattr.path_mtu, (int)qattr.timeout, (int)qattr.ah_attr.is_global);

	ab = (unsigned char *)a.buf;
	bb = (unsigned char *)b.buf;
	for (i = 0; i < MSG; i++)
		ab[i] = (unsigned char)(i * 7 + 1);

	/* SEND into a receive posted at B's offset 0. */
	rsge.addr = (uintptr_t)b.buf;
	rsge.length = MSG;
	rsge.lkey = b.mr->lkey;
	memset(&rwr, 0, sizeof(rwr));
	rwr.wr_id = 100;
	rwr.sg_list = &rsge;
	rwr.num_sge = 1;
	check_rc(ibv_post_recv(b.qp, &rwr, &rbad), "ibv_post_recv");
	wr = request(&a, &sge, 1, IBV_WR_SEND, 0, MSG);
	post(a.qp, &wr, "ibv_post_send(SEND)");
	expect_wc(cq, 1, IBV_WC_SEND, MSG, "SEND");
	expect_wc(cq, 100, IBV_WC_RECV, MSG, "SEND's receive");
	if (memcmp(ab, bb, MSG) != 0)
		fail("SEND: bytes differ");

	/* An inline SEND from unregistered memory, overwritten right after posting. */
	{
		char text[] = "inline: copied when posted";
		struct ibv_sge isge = { (uintptr_t)text, sizeof(text), 0 };

		check_rc(ibv_post_recv(b.qp, &rwr, &rbad), "ibv_post_recv");
		memset(&wr, 0, sizeof(wr));
		wr.wr_id = 7;
		wr.opcode = IBV_WR_SEND;
		wr.send_flags = IBV_SEND_INLINE;
		wr.sg_list = &isge;
		wr.num_sge = 1;
		post(a.qp, &wr, "ibv_post_send(SEND, INLINE)");
		memset(text, 'x', sizeof(text) - 1);
		expect_wc(cq, 7, IBV_WC_SEND, sizeof(text), "inline SEND");
		expect_wc(cq, 100, IBV_WC_RECV, sizeof(text), "inline SEND's receive");
		if (strcmp((char *)bb, "inline: copied when posted") != 0)
			fail("inline SEND: received \"%s\"", (char *)bb);
	}

	/* WRITE with immediate to B's offset 4096: consumes a receive, bytes land. */
	check_rc(ibv_post_recv(b.qp, &rwr, &rbad), "ibv_post_recv");
	wr = request(&a, &sge, 2, IBV_WR_RDMA_WRITE_WITH_IMM, 0, MSG);
	wr.imm_data = htonl(0xabcd);
	wr.wr.rdma.remote_addr = (uintptr_t)bb + 4096;
	wr.wr.rdma.rkey = b.mr->rkey;
	post(a.qp, &wr, "ibv_post_send(WRITE_WITH_IMM)");
	expect_wc(cq, 2, IBV_WC_RDMA_WRITE, MSG, "WRITE_WITH_IMM");
	wc = expect_wc(cq, 100, IBV_WC_RECV_RDMA_WITH_IMM, MSG, "WRITE_WITH_IMM's receive");
	if (!(wc.wc_flags & IBV_WC_WITH_IMM) || ntohl(wc.imm_data) != 0xabcd)
		fail("WRITE_WITH_IMM: imm 0x%x flags 0x%x", ntohl(wc.imm_data),
		     wc.wc_flags);
	if (memcmp(ab, bb + 4096, MSG) != 0)
		fail("WRITE: bytes differ");

	/* READ B's offset 4096 back into A's offset 4096. */
	wr = request(&a, &sge, 3, IBV_WR_RDMA_READ, 4096, MSG);
	wr.wr.rdma.remote_addr = (uintptr_t)bb + 4096;
	wr.wr.rdma.rkey = b.mr->rkey;
	post(a.qp, &wr, "ibv_post_send(READ)");
	expect_wc(cq, 3, IBV_WC_RDMA_READ, MSG, "READ");
	if (memcmp(ab + 4096, ab, MSG) != 0)
		fail("READ: bytes differ");

	/* Atomics on B's last 8 bytes, which start at 40. */
	remote = (uintptr_t)bb + BUF_LEN - 8;
	b.buf[BUF_LEN / 8 - 1] = 40;
	wr = request(&a, &sge, 4, IBV_WR_ATOMIC_CMP_AND_SWP, 8000, 8);
	wr.wr.atomic.remote_addr = remote;
	wr.wr.atomic.rkey = b.mr->rkey;
	wr.wr.atomic.compare_add = 40;
	wr.wr.atomic.swap = 50;
	post(a.qp, &wr, "ibv_post_send(CMP_AND_SWP)");
	expect_wc(cq, 4, IBV_WC_COMP_SWAP, 8, "CMP_AND_SWP");
	if (a.buf[1000] != 40 || b.buf[BUF_LEN / 8 - 1] != 50)
		fail("CMP_AND_SWP: found %llu, left %llu; want 40 and 50",
		     (unsigned long long)a.buf[1000],
		     (unsigned long long)b.buf[BUF_LEN / 8 - 1]);
	wr.wr_id = 5;
	post(a.qp, &wr, "ibv_post_send(CMP_AND_SWP, no match)");
	expect_wc(cq, 5, IBV_WC_COMP_SWAP, 8, "CMP_AND_SWP, no match");
	if (a.buf[1000] != 50 || b.buf[BUF_LEN / 8 - 1] != 50)
		fail("CMP_AND_SWP without a match changed the target");
	wr = request(&a, &sge, 6, IBV_WR_ATOMIC_FETCH_AND_ADD, 8000, 8);
	wr.wr.atomic.remote_addr = remote;
	wr.wr.atomic.rkey = b.mr->rkey;
	wr.wr.atomic.compare_add = 7;
	post(a.qp, &wr, "ibv_post_send(FETCH_AND_ADD)");
	expect_wc(cq, 6, IBV_WC_FETCH_ADD, 8, "FETCH_AND_ADD");
	if (a.buf[1000] != 50 || b.buf[BUF_LEN / 8 - 1] != 57)
		fail("FETCH_AND_ADD: found %llu, left %llu; want 50 and 57",
		     (unsigned long long)a.buf[1000],
		     (unsigned long long)b.buf[BUF_LEN / 8 - 1]);

	/* An unaligned atomic target: EINVAL, and *bad_wr is that request. */
	wr.wr.atomic.remote_addr = remote - 4;
	bad = NULL;
	if (ibv_post_send(a.qp, &wr, &bad) != EINVAL || bad != &wr)
		fail("unaligned atomic: want EINVAL with bad_wr set");

	for (i = 0; i < 2; i++) {
		struct end *e = i == 0 ? &a : &b;

		check_rc(ibv_destroy_qp(e->qp), "ibv_destroy_qp");
		check_rc(ibv_dereg_mr(e->mr), "ibv_dereg_mr");
		free(e->buf);
	}
	check_rc(ibv_destroy_cq(cq), "ibv_destroy_cq");
	check_rc(ibv_dealloc_pd(pd), "ibv_dealloc_pd");
	check_rc(ibv_close_device(ctx), "ibv_close_device");
	ibv_free_device_list(list);
	printf("rc_loopback: ok\n");
	return 0;
}
