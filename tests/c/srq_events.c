/*
 * srq_events: a plain libibverbs program, linked against libxrdma.so, for shared receive
 * queues and asynchronous events.
 *
 * In one process: an SRQ shared by two UD QPs (B and C) with IBV_SRQ_LIMIT armed; QP A
 * sends to both until the SRQ falls below its limit, and the IBV_EVENT_SRQ_LIMIT_REACHED
 * event is read with ibv_get_async_event (after polling ctx->async_fd with a timeout, so
 * the test cannot hang) and acknowledged. Then a CQ too small for the sends posted to it
 * overruns, and IBV_EVENT_CQ_ERR names that CQ. Also: ibv_query_pkey, the *_str helpers,
 * ibv_fork_init, ibv_resize_cq, and the SRQ error paths (resize, destroy while in use).
 *
 *   cc -std=c99 -Wall -Wextra -Werror srq_events.c -L<dir> -lxrdma -Wl,-rpath,<dir>
 *   XRDMA_IFACE=lo XRDMA_BACKEND=udp XRDMA_UDP_PORT=<port> ./srq_events
 *
 * Prints "srq_events: ok" and exits 0, or says what failed and exits 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK_PROG "srq_events"
#include "check.h"

#define QKEY 0x11111111u
#define GRH_LEN 40
#define PAYLOAD 64
#define SLOT (GRH_LEN + PAYLOAD)
#define SRQ_WR 8
#define SRQ_LIMIT 4
/* Receives taken until fewer than SRQ_LIMIT remain: the limit event fires. */
#define SENDS (SRQ_WR - SRQ_LIMIT + 1)
#define SEND_OFF 2048
#define BUF_LEN 4096
#define TIMEOUT_MS 5000
#define NO_SUCH_QPN 0xabcdefu

static void check_str(const char *got, const char *want, const char *what)
{
	if (got == NULL || strcmp(got, want) != 0)
		fail("%s: \"%s\", want \"%s\"", what, got ? got : "(null)", want);
}

static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_cq *send_cq,
				struct ibv_cq *recv_cq, struct ibv_srq *srq,
				unsigned int max_send_wr, const char *what)
{
	struct ibv_qp_init_attr init;
	struct ibv_qp *qp;

	memset(&init, 0, sizeof(init));
	init.send_cq = send_cq;
	init.recv_cq = recv_cq;
	init.srq = srq;
	init.qp_type = IBV_QPT_UD;
	init.cap.max_send_wr = max_send_wr;
	init.cap.max_recv_wr = srq ? 0 : 4;
	init.cap.max_send_sge = 1;
	init.cap.max_recv_sge = 1;
	qp = check_ptr(ibv_create_qp(pd, &init), what);
	if (qp->srq != srq)
		fail("%s: qp->srq is not the SRQ given", what);
	return qp;
}

static void to_rts(struct ibv_qp *qp, const char *name)
{
	struct ibv_qp_attr attr;
	char what[64];

	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IBV_QPS_INIT;
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
	snprintf(what, sizeof(what), "ibv_modify_qp(%s, RTS)", name);
	check_rc(ibv_modify_qp(qp, &attr, IBV_QP_STATE | IBV_QP_SQ_PSN), what);
}

static void post_send(struct ibv_qp *qp, struct ibv_ah *ah, struct ibv_mr *mr,
		      unsigned char *buf, uint32_t remote_qpn, uint64_t wr_id)
{
	struct ibv_sge sge;
	struct ibv_send_wr wr, *bad;

	sge.addr = (uintptr_t)(buf + SEND_OFF);
	sge.length = PAYLOAD;
	sge.lkey = mr->lkey;
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = wr_id;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = IBV_WR_SEND;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.wr.ud.ah = ah;
	wr.wr.ud.remote_qpn = remote_qpn;
	wr.wr.ud.remote_qkey = QKEY;
	bad = NULL;
	check_rc(ibv_post_send(qp, &wr, &bad), "ibv_post_send");
}

/* Waits (polling async_fd, never blocking in the verb) for the next async event. */
static void get_event(struct ibv_context *ctx, struct ibv_async_event *ev,
		      const char *what)
{
	struct pollfd pfd;
	int rc;

	pfd.fd = ctx->async_fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	rc = poll(&pfd, 1, TIMEOUT_MS);
	if (rc < 0)
		fail("poll(async_fd): %s", strerror(errno));
	if (rc == 0)
		fail("%s: no asynchronous event within %d ms", what, TIMEOUT_MS);
	if (ibv_get_async_event(ctx, ev) != 0)
		fail("%s: ibv_get_async_event: %s", what, strerror(errno));
}

int main(void)
{
	struct ibv_device **list;
	struct ibv_context *ctx;
	struct ibv_port_attr port;
	union ibv_gid gid;
	struct ibv_pd *pd;
	unsigned char *buf;
	struct ibv_mr *mr;
	struct ibv_cq *send_cq, *recv_cq, *tiny;
	struct ibv_srq_init_attr srq_init;
	struct ibv_srq_attr srq_attr;
	struct ibv_srq *srq;
	struct ibv_qp *qp_a, *qp_b, *qp_c, *qp_d;
	struct ibv_qp_attr qattr;
	struct ibv_qp_init_attr qinit;
	struct ibv_ah_attr ah_attr;
	struct ibv_ah *ah;
	struct ibv_sge sge[SRQ_WR];
	struct ibv_recv_wr rwr[SRQ_WR], *bad_rwr;
	struct ibv_async_event ev;
	struct ibv_wc wc[8];
	__be16 pkey;
	int num, rc, i, flags, sends_done = 0, recvs_done = 0, on_b = 0, on_c = 0;
	int tiny_sends;
	long long deadline;

	/* ibv_fork_init: nothing to do for xrdma, and it says so with 0. */
	check_rc(ibv_fork_init(), "ibv_fork_init");

	/* The string helpers, as libibverbs words them. */
	check_str(ibv_port_state_str(IBV_PORT_ACTIVE), "active", "ibv_port_state_str(ACTIVE)");
	check_str(ibv_port_state_str(IBV_PORT_DOWN), "down", "ibv_port_state_str(DOWN)");
	check_str(ibv_port_state_str((enum ibv_port_state)42), "unknown",
		  "ibv_port_state_str(42)");
	check_str(ibv_node_type_str(IBV_NODE_CA), "InfiniBand channel adapter",
		  "ibv_node_type_str(CA)");
	check_str(ibv_node_type_str(IBV_NODE_UNKNOWN), "unknown",
		  "ibv_node_type_str(UNKNOWN)");
	check_str(ibv_event_type_str(IBV_EVENT_CQ_ERR), "CQ error",
		  "ibv_event_type_str(CQ_ERR)");
	check_str(ibv_event_type_str(IBV_EVENT_SRQ_LIMIT_REACHED), "SRQ limit reached",
		  "ibv_event_type_str(SRQ_LIMIT_REACHED)");
	check_str(ibv_event_type_str((enum ibv_event_type)99), "unknown",
		  "ibv_event_type_str(99)");
	check_str(ibv_wc_status_str(IBV_WC_SUCCESS), "success", "ibv_wc_status_str(SUCCESS)");
	check_str(ibv_wc_status_str(IBV_WC_WR_FLUSH_ERR), "Work Request Flushed Error",
		  "ibv_wc_status_str(WR_FLUSH_ERR)");

	list = ibv_get_device_list(&num);
	if (list == NULL || num != 1)
		fail("ibv_get_device_list: %d devices (%s), want 1", num, strerror(errno));
	ctx = check_ptr(ibv_open_device(list[0]), "ibv_open_device");
	if (ctx->async_fd < 0)
		fail("ctx->async_fd is %d", ctx->async_fd);

	/* P_Key: the default one at index 0, nothing else. */
	pkey = 0;
	check_rc(ibv_query_pkey(ctx, 1, 0, &pkey), "ibv_query_pkey(0)");
	if (ntohs(pkey) != 0xffff)
		fail("ibv_query_pkey(0): 0x%04x, want 0xffff", ntohs(pkey));
	errno = 0;
	rc = ibv_query_pkey(ctx, 1, 1, &pkey);
	if (rc == 0 || errno != EINVAL)
		fail("ibv_query_pkey(1): %d, errno %d, want failure with EINVAL", rc, errno);

	check_rc(ibv_query_port(ctx, 1, &port), "ibv_query_port");
	check_str(ibv_port_state_str(port.state), "active", "port 1 state");
	if (ibv_query_gid(ctx, 1, 0, &gid) != 0)
		fail("ibv_query_gid(0): %s", strerror(errno));

	/* Nothing has happened yet: with O_NONBLOCK, EAGAIN at once. */
	flags = fcntl(ctx->async_fd, F_GETFL);
	if (flags < 0 || fcntl(ctx->async_fd, F_SETFL, flags | O_NONBLOCK) < 0)
		fail("fcntl(async_fd, O_NONBLOCK): %s", strerror(errno));
	errno = 0;
	rc = ibv_get_async_event(ctx, &ev);
	if (rc != -1 || errno != EAGAIN)
		fail("ibv_get_async_event with no event: %d, errno %d, want -1 and EAGAIN",
		     rc, errno);
	if (fcntl(ctx->async_fd, F_SETFL, flags) < 0)
		fail("fcntl(async_fd, flags): %s", strerror(errno));

	pd = check_ptr(ibv_alloc_pd(ctx), "ibv_alloc_pd");
	buf = check_ptr(calloc(1, BUF_LEN), "calloc");
	mr = check_ptr(ibv_reg_mr(pd, buf, BUF_LEN, IBV_ACCESS_LOCAL_WRITE), "ibv_reg_mr");
	for (i = 0; i < PAYLOAD; i++)
		buf[SEND_OFF + i] = (unsigned char)(i + 1);

	send_cq = check_ptr(ibv_create_cq(ctx, 16, NULL, NULL, 0), "ibv_create_cq(send)");
	recv_cq = check_ptr(ibv_create_cq(ctx, 16, NULL, NULL, 0), "ibv_create_cq(recv)");
	rc = ibv_resize_cq(send_cq, 32);
	if (rc != EOPNOTSUPP)
		fail("ibv_resize_cq: %d, want EOPNOTSUPP", rc);

	/* The SRQ: its sizes written back, the limit given at creation ignored. */
	memset(&srq_init, 0, sizeof(srq_init));
	srq_init.srq_context = &srq_init;
	srq_init.attr.max_wr = SRQ_WR;
	srq_init.attr.max_sge = 1;
	srq_init.attr.srq_limit = 3;
	srq = check_ptr(ibv_create_srq(pd, &srq_init), "ibv_create_srq");
	if (srq_init.attr.max_wr < SRQ_WR || srq_init.attr.max_sge < 1)
		fail("ibv_create_srq: max_wr %u max_sge %u", srq_init.attr.max_wr,
		     srq_init.attr.max_sge);
	if (srq->context != ctx || srq->pd != pd || srq->srq_context != &srq_init)
		fail("ibv_create_srq: context, pd or srq_context wrong");
	check_rc(ibv_query_srq(srq, &srq_attr), "ibv_query_srq");
	if (srq_attr.srq_limit != 0)
		fail("ibv_query_srq: srq_limit %u before arming, want 0", srq_attr.srq_limit);

	memset(&srq_attr, 0, sizeof(srq_attr));
	srq_attr.max_wr = 2 * SRQ_WR;
	rc = ibv_modify_srq(srq, &srq_attr, IBV_SRQ_MAX_WR);
	if (rc != EOPNOTSUPP)
		fail("ibv_modify_srq(IBV_SRQ_MAX_WR): %d, want EOPNOTSUPP", rc);
	srq_attr.srq_limit = SRQ_LIMIT;
	check_rc(ibv_modify_srq(srq, &srq_attr, IBV_SRQ_LIMIT), "ibv_modify_srq(LIMIT)");
	check_rc(ibv_query_srq(srq, &srq_attr), "ibv_query_srq");
	if (srq_attr.srq_limit != SRQ_LIMIT)
		fail("ibv_query_srq: srq_limit %u, want %d", srq_attr.srq_limit, SRQ_LIMIT);

	qp_a = create_qp(pd, send_cq, recv_cq, NULL, 8, "ibv_create_qp(A)");
	qp_b = create_qp(pd, send_cq, recv_cq, srq, 4, "ibv_create_qp(B)");
	qp_c = create_qp(pd, send_cq, recv_cq, srq, 4, "ibv_create_qp(C)");
	to_rts(qp_a, "A");
	to_rts(qp_b, "B");
	to_rts(qp_c, "C");
	check_rc(ibv_query_qp(qp_b, &qattr, IBV_QP_STATE, &qinit), "ibv_query_qp(B)");
	if (qinit.srq != srq)
		fail("ibv_query_qp(B): init_attr.srq is not the SRQ");

	rc = ibv_destroy_srq(srq);
	if (rc != EBUSY)
		fail("ibv_destroy_srq with QPs on it: %d, want EBUSY", rc);

	/* Fill the SRQ with one chain of SRQ_WR receives. */
	for (i = 0; i < SRQ_WR; i++) {
		sge[i].addr = (uintptr_t)(buf + i * SLOT);
		sge[i].length = SLOT;
		sge[i].lkey = mr->lkey;
		memset(&rwr[i], 0, sizeof(rwr[i]));
		rwr[i].wr_id = 100 + i;
		rwr[i].sg_list = &sge[i];
		rwr[i].num_sge = 1;
		rwr[i].next = i + 1 < SRQ_WR ? &rwr[i + 1] : NULL;
	}
	bad_rwr = NULL;
	check_rc(ibv_post_srq_recv(srq, rwr, &bad_rwr), "ibv_post_srq_recv");
	/* A full SRQ refuses one more, naming it in *bad_wr. */
	rwr[0].next = NULL;
	rc = ibv_post_srq_recv(srq, &rwr[0], &bad_rwr);
	if (rc == 0 || bad_rwr != &rwr[0])
		fail("ibv_post_srq_recv on a full SRQ: %d, bad_wr %s", rc,
		     bad_rwr == &rwr[0] ? "set" : "not set");

	memset(&ah_attr, 0, sizeof(ah_attr));
	ah_attr.is_global = 1;
	ah_attr.grh.dgid = gid;
	ah_attr.grh.hop_limit = 64;
	ah_attr.port_num = 1;
	ah = check_ptr(ibv_create_ah(pd, &ah_attr), "ibv_create_ah");

	/* SENDS sends, alternately to B and C, all landing in the one SRQ. */
	for (i = 0; i < SENDS; i++)
		post_send(qp_a, ah, mr, buf, i % 2 ? qp_c->qp_num : qp_b->qp_num, i);
	deadline = now_ms() + TIMEOUT_MS;
	while (sends_done < SENDS || recvs_done < SENDS) {
		if (now_ms() > deadline)
			fail("timed out: %d of %d sends, %d of %d receives completed",
			     sends_done, SENDS, recvs_done, SENDS);
		num = ibv_poll_cq(send_cq, 8, wc);
		for (i = 0; i < num; i++) {
			if (wc[i].status != IBV_WC_SUCCESS)
				fail("send completion: %s", ibv_wc_status_str(wc[i].status));
			sends_done++;
		}
		num = ibv_poll_cq(recv_cq, 8, wc);
		for (i = 0; i < num; i++) {
			if (wc[i].status != IBV_WC_SUCCESS)
				fail("receive completion: %s", ibv_wc_status_str(wc[i].status));
			if (wc[i].wr_id != (uint64_t)(100 + recvs_done))
				fail("receive wr_id %llu, want %d (SRQ order)",
				     (unsigned long long)wc[i].wr_id, 100 + recvs_done);
			if (wc[i].byte_len != SLOT)
				fail("receive byte_len %u, want %d", wc[i].byte_len, SLOT);
			if (wc[i].qp_num == qp_b->qp_num)
				on_b++;
			else if (wc[i].qp_num == qp_c->qp_num)
				on_c++;
			else
				fail("receive on QP %u, neither B nor C", wc[i].qp_num);
			if (wc[i].src_qp != qp_a->qp_num)
				fail("receive src_qp %u, want A's %u", wc[i].src_qp,
				     qp_a->qp_num);
			recvs_done++;
		}
	}
	if (on_b != (SENDS + 1) / 2 || on_c != SENDS / 2)
		fail("receives: %d on B, %d on C, want %d and %d", on_b, on_c,
		     (SENDS + 1) / 2, SENDS / 2);
	if (memcmp(buf + (SENDS - 1) * SLOT + GRH_LEN, buf + SEND_OFF, PAYLOAD) != 0)
		fail("the last receive's payload differs from what was sent");

	/* The SRQ fell below its limit: one event naming it, and the limit disarmed. */
	get_event(ctx, &ev, "SRQ limit");
	if (ev.event_type != IBV_EVENT_SRQ_LIMIT_REACHED)
		fail("event %s (%d), want SRQ limit reached",
		     ibv_event_type_str(ev.event_type), (int)ev.event_type);
	if (ev.element.srq != srq)
		fail("IBV_EVENT_SRQ_LIMIT_REACHED names another SRQ");
	ibv_ack_async_event(&ev);
	check_rc(ibv_query_srq(srq, &srq_attr), "ibv_query_srq");
	if (srq_attr.srq_limit != 0)
		fail("srq_limit %u after the event, want 0 (disarmed)", srq_attr.srq_limit);

	/* CQ overrun: more signaled sends than the tiny CQ holds, never polled. */
	tiny = check_ptr(ibv_create_cq(ctx, 1, NULL, NULL, 0), "ibv_create_cq(tiny)");
	tiny_sends = tiny->cqe + 1;
	qp_d = create_qp(pd, tiny, recv_cq, NULL, (unsigned int)tiny_sends,
			 "ibv_create_qp(D)");
	to_rts(qp_d, "D");
	for (i = 0; i < tiny_sends; i++)
		post_send(qp_d, ah, mr, buf, NO_SUCH_QPN, 1000 + i);
	get_event(ctx, &ev, "CQ overrun");
	if (ev.event_type != IBV_EVENT_CQ_ERR)
		fail("event %s (%d), want CQ error", ibv_event_type_str(ev.event_type),
		     (int)ev.event_type);
	if (ev.element.cq != tiny)
		fail("IBV_EVENT_CQ_ERR names CQ %p, want the tiny CQ %p (send %p, recv %p)",
		     (void *)ev.element.cq, (void *)tiny, (void *)send_cq, (void *)recv_cq);
	ibv_ack_async_event(&ev);

	/* Tear down; the SRQ can go once its QPs have. */
	check_rc(ibv_destroy_qp(qp_d), "ibv_destroy_qp(D)");
	check_rc(ibv_destroy_cq(tiny), "ibv_destroy_cq(tiny)");
	check_rc(ibv_destroy_ah(ah), "ibv_destroy_ah");
	check_rc(ibv_destroy_qp(qp_b), "ibv_destroy_qp(B)");
	rc = ibv_destroy_srq(srq);
	if (rc != EBUSY)
		fail("ibv_destroy_srq with QP C on it: %d, want EBUSY", rc);
	check_rc(ibv_destroy_qp(qp_c), "ibv_destroy_qp(C)");
	check_rc(ibv_destroy_srq(srq), "ibv_destroy_srq");
	check_rc(ibv_destroy_qp(qp_a), "ibv_destroy_qp(A)");
	check_rc(ibv_destroy_cq(recv_cq), "ibv_destroy_cq(recv)");
	check_rc(ibv_destroy_cq(send_cq), "ibv_destroy_cq(send)");
	check_rc(ibv_dereg_mr(mr), "ibv_dereg_mr");
	free(buf);
	check_rc(ibv_dealloc_pd(pd), "ibv_dealloc_pd");
	check_rc(ibv_close_device(ctx), "ibv_close_device");
	ibv_free_device_list(list);

	printf("srq_events: ok\n");
	return 0;
}
