/*
 * ud_loopback: a plain libibverbs program, linked against libxrdma.so.
 *
 * In one process: opens the one xrdma device, creates two UD QPs on one CQ with a
 * completion channel, sends a SEND_WITH_IMM from QP A to QP B through an address handle
 * to GID 0 (the device's own address), waits for the completion event and checks both
 * completions and the received bytes. Also checks two error paths the libibverbs way.
 *
 *   cc -std=c99 -Wall -Wextra -Werror ud_loopback.c -L<dir> -lxrdma -Wl,-rpath,<dir>
 *   XRDMA_IFACE=lo XRDMA_BACKEND=udp XRDMA_UDP_PORT=<port> ./ud_loopback
 *
 * Prints "ud_loopback: ok" and exits 0, or says what failed and exits 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK_PROG "ud_loopback"
#include "check.h"

#define QKEY 0x11111111u
#define IMM 0xdeadbeefu
#define GRH_LEN 40
#define PAYLOAD 100
#define RECV_OFF 0
#define SEND_OFF 1024
#define BAD_OFF 2048
#define BUF_LEN 4096
#define SEND_WR_ID 1
#define RECV_WR_ID 2
#define TIMEOUT_MS 5000

static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_cq *cq,
				const char *what)
{
	struct ibv_qp_init_attr init;
	struct ibv_qp *qp;

	memset(&init, 0, sizeof(init));
	init.send_cq = cq;
	init.recv_cq = cq;
	init.qp_type = IBV_QPT_UD;
	init.cap.max_send_wr = 4;
	init.cap.max_recv_wr = 4;
	init.cap.max_send_sge = 1;
	init.cap.max_recv_sge = 1;
	qp = check_ptr(ibv_create_qp(pd, &init), what);
	if (qp->qp_type != IBV_QPT_UD || qp->state != IBV_QPS_RESET)
		fail("%s: type %d state %d, want UD in RESET", what,
		     (int)qp->qp_type, (int)qp->state);
	if (init.cap.max_recv_sge != 1)
		fail("%s: max_recv_sge %u, want 1", what, init.cap.max_recv_sge);
	return qp;
}

/* RESET -> INIT -> RTR -> RTS, as a UD QP goes. */
static void to_rts(struct ibv_qp *qp, const char *name)
{
	struct ibv_qp_attr attr;
	char what[64];

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_INIT;
	attr.pkey_index = 0;
	attr.port_num = 1;
	attr.qkey = QKEY;
	snprintf(what, sizeof(what), "ibv_modify_qp(%s, INIT)", name);
	check_rc(ibv_modify_qp(qp, &attr,
			       IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
				       IBV_QP_QKEY),
		 what);

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_RTR;
	snprintf(what, sizeof(what), "ibv_modify_qp(%s, RTR)", name);
	check_rc(ibv_modify_qp(qp, &attr, IBV_QP_STATE), what);

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_RTS;
	attr.sq_psn = 0;
	snprintf(what, sizeof(what), "ibv_modify_qp(%s, RTS)", name);
	check_rc(ibv_modify_qp(qp, &attr, IBV_QP_STATE | IBV_QP_SQ_PSN), what);
	if (qp->state != IBV_QPS_RTS)
		fail("%s: qp->state %d after RTS", name, (int)qp->state);
}

int main(void)
{
	struct ibv_device **list;
	struct ibv_device *dev;
	struct ibv_context *ctx;
	struct ibv_device_attr dev_attr;
	struct ibv_port_attr port;
	union ibv_gid gid;
	struct ibv_pd *pd;
	unsigned char *buf;
	struct ibv_mr *mr;
	struct ibv_comp_channel *channel;
	struct ibv_cq *cq;
	struct ibv_qp *qp_a, *qp_b, *qp_fresh;
	struct ibv_ah_attr ah_attr;
	struct ibv_ah *ah;
	struct ibv_sge sge;
	struct ibv_recv_wr rwr, *bad_rwr;
	struct ibv_send_wr swr, *bad_swr;
	struct ibv_qp_attr attr;
	struct ibv_wc wc[4], send_wc, recv_wc;
	int have_send = 0, have_recv = 0;
	unsigned int events = 0;
	long long deadline;
	int num, rc, i;
	const char *name;

	memset(&send_wc, 0, sizeof(send_wc));
	memset(&recv_wc, 0, sizeof(recv_wc));

	/* The device list: exactly one device, xrdma_lo. */
	list = ibv_get_device_list(&num);
	if (list == NULL)
		fail("ibv_get_device_list: %s", strerror(errno));
	if (num != 1 || list[0] == NULL || list[1] != NULL)
		fail("ibv_get_device_list: %d devices, want 1", num);
	dev = list[0];
	name = ibv_get_device_name(dev);
	if (name == NULL || strcmp(name, "xrdma_lo") != 0)
		fail("device name %s, want xrdma_lo", name ? name : "(null)");

	ctx = check_ptr(ibv_open_device(dev), "ibv_open_device");
	if (ctx->device != dev)
		fail("ctx->device is not the device opened");

	check_rc(ibv_query_device(ctx, &dev_attr), "ibv_query_device");
	if (dev_attr.phys_port_cnt < 1)
		fail("ibv_query_device: phys_port_cnt %u", dev_attr.phys_port_cnt);
	if (dev_attr.max_qp < 3 || dev_attr.max_sge < 1)
		fail("ibv_query_device: max_qp %d max_sge %d", dev_attr.max_qp,
		     dev_attr.max_sge);

	check_rc(ibv_query_port(ctx, 1, &port), "ibv_query_port");
	if (port.state != IBV_PORT_ACTIVE)
		fail("port 1 state %d, want IBV_PORT_ACTIVE", (int)port.state);
	if (port.link_layer != IBV_LINK_LAYER_ETHERNET)
		fail("port 1 link layer %u, want Ethernet", port.link_layer);
	if (port.gid_tbl_len < 1)
		fail("port 1 gid_tbl_len %d", port.gid_tbl_len);
	if (port.max_msg_sz < GRH_LEN + PAYLOAD)
		fail("port 1 max_msg_sz %u", port.max_msg_sz);

	if (ibv_query_gid(ctx, 1, 0, &gid) != 0)
		fail("ibv_query_gid(0): %s", strerror(errno));
	{
		/* lo: 127.0.0.1, IPv4 mapped (::ffff:127.0.0.1). */
		static const unsigned char want[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
							0xff, 0xff, 127, 0, 0, 1 };
		if (memcmp(gid.raw, want, sizeof(want)) != 0) {
			char text[INET6_ADDRSTRLEN];

			inet_ntop(AF_INET6, gid.raw, text, sizeof(text));
			fail("GID 0 is %s, want ::ffff:127.0.0.1", text);
		}
	}

	pd = check_ptr(ibv_alloc_pd(ctx), "ibv_alloc_pd");
	buf = check_ptr(calloc(1, BUF_LEN), "calloc");
	mr = check_ptr(ibv_reg_mr(pd, buf, BUF_LEN, IBV_ACCESS_LOCAL_WRITE),
		       "ibv_reg_mr");
	if (mr->addr != buf || mr->length != BUF_LEN || mr->pd != pd)
		fail("ibv_reg_mr: the MR does not describe the buffer");

	channel = check_ptr(ibv_create_comp_channel(ctx), "ibv_create_comp_channel");
	cq = check_ptr(ibv_create_cq(ctx, 16, &have_send, channel, 0), "ibv_create_cq");
	if (cq->cqe < 16 || cq->channel != channel || cq->cq_context != &have_send)
		fail("ibv_create_cq: cqe %d, channel or cq_context wrong", cq->cqe);

	qp_a = create_qp(pd, cq, "ibv_create_qp(A)");
	qp_b = create_qp(pd, cq, "ibv_create_qp(B)");
	if (qp_a->qp_num == qp_b->qp_num)
		fail("QPs A and B share QP number %u", qp_a->qp_num);
	to_rts(qp_a, "A");
	to_rts(qp_b, "B");

	memset(&ah_attr, 0, sizeof(ah_attr));
	ah_attr.is_global = 1;
	ah_attr.grh.dgid = gid;
	ah_attr.grh.sgid_index = 0;
	ah_attr.grh.hop_limit = 64;
	ah_attr.port_num = 1;
	ah = check_ptr(ibv_create_ah(pd, &ah_attr), "ibv_create_ah");

	/* The receive on B: the 40-byte GRH, then the payload. */
	memset(buf + RECV_OFF, 0xee, GRH_LEN + PAYLOAD);
	sge.addr = (uintptr_t)(buf + RECV_OFF);
	sge.length = GRH_LEN + PAYLOAD;
	sge.lkey = mr->lkey;
	memset(&rwr, 0, sizeof(rwr));
	rwr.wr_id = RECV_WR_ID;
	rwr.sg_list = &sge;
	rwr.num_sge = 1;
	bad_rwr = NULL;
	check_rc(ibv_post_recv(qp_b, &rwr, &bad_rwr), "ibv_post_recv(B)");

	check_rc(ibv_req_notify_cq(cq, 0), "ibv_req_notify_cq");

	/* The send from A: a known pattern, with immediate data. */
	for (i = 0; i < PAYLOAD; i++)
		buf[SEND_OFF + i] = (unsigned char)(i * 7 + 3);
	sge.addr = (uintptr_t)(buf + SEND_OFF);
	sge.length = PAYLOAD;
	sge.lkey = mr->lkey;
	memset(&swr, 0, sizeof(swr));
	swr.wr_id = SEND_WR_ID;
	swr.sg_list = &sge;
	swr.num_sge = 1;
	swr.opcode = IBV_WR_SEND_WITH_IMM;
	swr.send_flags = IBV_SEND_SIGNALED;
	swr.imm_data = htonl(IMM);
	swr.wr.ud.ah = ah;
	swr.wr.ud.remote_qpn = qp_b->qp_num;
	swr.wr.ud.remote_qkey = QKEY;
	bad_swr = NULL;
	check_rc(ibv_post_send(qp_a, &swr, &bad_swr), "ibv_post_send(A)");

	/* Wait for events and poll until both completions are in. */
	deadline = now_ms() + TIMEOUT_MS;
	while (!have_send || !have_recv) {
		struct pollfd pfd;
		struct ibv_cq *ev_cq;
		void *ev_ctx;
		long long left = deadline - now_ms();

		if (left <= 0)
			fail("timed out: send completion %s, receive completion %s",
			     have_send ? "in" : "missing", have_recv ? "in" : "missing");
		pfd.fd = channel->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		rc = poll(&pfd, 1, (int)left);
		if (rc < 0)
			fail("poll(channel fd): %s", strerror(errno));
		if (rc == 0)
			continue;
		if (ibv_get_cq_event(channel, &ev_cq, &ev_ctx) != 0)
			fail("ibv_get_cq_event: %s", strerror(errno));
		events++;
		if (ev_cq != cq || ev_ctx != &have_send)
			fail("ibv_get_cq_event: wrong CQ or cq_context");
		ibv_ack_cq_events(cq, 1);
		check_rc(ibv_req_notify_cq(cq, 0), "ibv_req_notify_cq (re-arm)");

		for (;;) {
			num = ibv_poll_cq(cq, 4, wc);
			if (num < 0)
				fail("ibv_poll_cq: %d", num);
			if (num == 0)
				break;
			for (i = 0; i < num; i++) {
				if (wc[i].status != IBV_WC_SUCCESS)
					fail("completion wr_id %llu: status %s (%d)",
					     (unsigned long long)wc[i].wr_id,
					     ibv_wc_status_str(wc[i].status),
					     (int)wc[i].status);
				if (wc[i].wr_id == SEND_WR_ID && !have_send) {
					send_wc = wc[i];
					have_send = 1;
				} else if (wc[i].wr_id == RECV_WR_ID && !have_recv) {
					recv_wc = wc[i];
					have_recv = 1;
				} else {
					fail("unexpected completion wr_id %llu",
					     (unsigned long long)wc[i].wr_id);
				}
			}
		}
	}

	/* The send completion. */
	if (send_wc.opcode != IBV_WC_SEND)
		fail("send completion: opcode %d, want IBV_WC_SEND", (int)send_wc.opcode);
	if (send_wc.qp_num != qp_a->qp_num)
		fail("send completion: qp_num %u, want %u", send_wc.qp_num, qp_a->qp_num);

	/* The receive completion. */
	if (recv_wc.opcode != IBV_WC_RECV)
		fail("receive completion: opcode %d, want IBV_WC_RECV", (int)recv_wc.opcode);
	if (recv_wc.qp_num != qp_b->qp_num)
		fail("receive completion: qp_num %u, want %u", recv_wc.qp_num, qp_b->qp_num);
	if (recv_wc.byte_len != GRH_LEN + PAYLOAD)
		fail("receive completion: byte_len %u, want %d", recv_wc.byte_len,
		     GRH_LEN + PAYLOAD);
	if (recv_wc.src_qp != qp_a->qp_num)
		fail("receive completion: src_qp %u, want %u", recv_wc.src_qp, qp_a->qp_num);
	if (!(recv_wc.wc_flags & IBV_WC_GRH))
		fail("receive completion: no IBV_WC_GRH in wc_flags 0x%x", recv_wc.wc_flags);
	if (!(recv_wc.wc_flags & IBV_WC_WITH_IMM))
		fail("receive completion: no IBV_WC_WITH_IMM in wc_flags 0x%x",
		     recv_wc.wc_flags);
	if (recv_wc.imm_data != htonl(IMM))
		fail("receive completion: imm_data 0x%08x (network order), want 0x%08x",
		     ntohl(recv_wc.imm_data), IMM);
	for (i = 0; i < PAYLOAD; i++)
		if (buf[RECV_OFF + GRH_LEN + i] != (unsigned char)(i * 7 + 3))
			fail("payload byte %d is 0x%02x, want 0x%02x", i,
			     buf[RECV_OFF + GRH_LEN + i], (unsigned char)(i * 7 + 3));
	if (events < 1)
		fail("no completion event");

	/* Error path 1: RESET -> RTR is not a transition; EINVAL, state unchanged. */
	qp_fresh = create_qp(pd, cq, "ibv_create_qp(fresh)");
	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_RTR;
	rc = ibv_modify_qp(qp_fresh, &attr, IBV_QP_STATE);
	if (rc != EINVAL)
		fail("ibv_modify_qp(RESET -> RTR) returned %d (%s), want EINVAL", rc,
		     rc ? strerror(rc) : "success");
	if (qp_fresh->state != IBV_QPS_RESET)
		fail("qp->state %d after a refused modify, want RESET", (int)qp_fresh->state);

	/* Error path 2: more SGEs than max_recv_sge (and no list): an errno, *bad_wr set. */
	memset(&rwr, 0, sizeof(rwr));
	rwr.wr_id = 99;
	rwr.sg_list = NULL;
	rwr.num_sge = 2;
	bad_rwr = NULL;
	rc = ibv_post_recv(qp_b, &rwr, &bad_rwr);
	if (rc == 0)
		fail("ibv_post_recv with num_sge 2 > max_recv_sge 1 succeeded");
	if (rc < 0)
		fail("ibv_post_recv returned %d, want a positive errno value", rc);
	if (bad_rwr != &rwr)
		fail("ibv_post_recv failed (%s) without setting *bad_wr", strerror(rc));
	num = ibv_poll_cq(cq, 4, wc);
	if (num != 0)
		fail("ibv_poll_cq after the failed post: %d, want 0", num);

	/* Objects still in use cannot be destroyed: EBUSY, as libibverbs returns. */
	rc = ibv_destroy_cq(cq);
	if (rc != EBUSY)
		fail("ibv_destroy_cq with QPs on it returned %d, want EBUSY", rc);
	rc = ibv_dealloc_pd(pd);
	if (rc != EBUSY)
		fail("ibv_dealloc_pd with QPs and an MR in it returned %d, want EBUSY", rc);

	/* Tear down in reverse order. */
	check_rc(ibv_destroy_qp(qp_fresh), "ibv_destroy_qp(fresh)");
	check_rc(ibv_destroy_ah(ah), "ibv_destroy_ah");
	check_rc(ibv_destroy_qp(qp_b), "ibv_destroy_qp(B)");
	check_rc(ibv_destroy_qp(qp_a), "ibv_destroy_qp(A)");
	check_rc(ibv_destroy_cq(cq), "ibv_destroy_cq");
	check_rc(ibv_destroy_comp_channel(channel), "ibv_destroy_comp_channel");
	check_rc(ibv_dereg_mr(mr), "ibv_dereg_mr");
	free(buf);
	check_rc(ibv_dealloc_pd(pd), "ibv_dealloc_pd");
	check_rc(ibv_close_device(ctx), "ibv_close_device");
	ibv_free_device_list(list);

	printf("ud_loopback: ok\n");
	return 0;
}
