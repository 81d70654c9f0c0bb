/*
 * librdmacm's API from C, linked against libxrdma.so: one process connects an RC QP to
 * itself over loopback through the connection manager (REQ, REP, RTU over QP1), sends a
 * message on it, and disconnects; qp->state follows each step as librdmacm keeps it.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_PROG "cm_loopback"
#include "check.h"

/* The next event on `ch`, which must be `want`. */
static struct rdma_cm_event *expect(struct rdma_event_channel *ch, enum rdma_cm_event_type want)
{
	struct rdma_cm_event *ev;

	if (rdma_get_cm_event(ch, &ev))
		fail("rdma_get_cm_event: %s", strerror(errno));
	if (ev->event != want)
		fail("got %s (status %d), wanted %s", rdma_event_str(ev->event), ev->status,
		     rdma_event_str(want));
	return ev;
}

static void check_state(struct rdma_cm_id *id, enum ibv_qp_state want, const char *when)
{
	if (!id->qp)
		fail("%s: no QP", when);
	if (id->qp->state != want)
		fail("%s: qp->state %d, wanted %d", when, id->qp->state, want);
}

int main(void)
{
	struct rdma_event_channel *ch = rdma_create_event_channel();
	struct rdma_cm_id *listener, *client, *server;
	struct rdma_cm_event *ev;
	struct sockaddr_in addr;
	struct ibv_qp_init_attr qp_attr;
	struct rdma_conn_param param;
	const char *port_env = getenv("XRDMA_UDP_PORT");
	char rx[64], tx[64] = "over the connection manager";
	struct ibv_mr *rx_mr, *tx_mr;
	struct ibv_sge sge;
	struct ibv_recv_wr rwr, *bad_rwr;
	struct ibv_send_wr swr, *bad_swr;
	struct ibv_wc wc;
	int n;

	if (!ch)
		fail("rdma_create_event_channel: %s", strerror(errno));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((uint16_t)(port_env ? atoi(port_env) + 1 : 7471));

	if (rdma_create_id(ch, &listener, NULL, RDMA_PS_TCP) ||
	    rdma_bind_addr(listener, (struct sockaddr *)&addr) || rdma_listen(listener, 4))
		fail("listening: %s", strerror(errno));
	if (rdma_create_id(ch, &client, NULL, RDMA_PS_TCP))
		fail("rdma_create_id: %s", strerror(errno));
	if (rdma_resolve_addr(client, NULL, (struct sockaddr *)&addr, 2000))
		fail("rdma_resolve_addr: %s", strerror(errno));
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ADDR_RESOLVED));
	if (rdma_resolve_route(client, 2000))
		fail("rdma_resolve_route: %s", strerror(errno));
	rdma_ack_cm_event(expect(ch, RDMA_CM_EVENT_ROUTE_RESOLVED));
	if (!client->verbs || !client->pd)
		fail("a resolved id has no device or PD");

	memset(&qp_attr, 0, sizeof(qp_attr));
	qp_attr.qp_type = IBV_QPT_RC;
	qp_attr.cap.max_send_wr = qp_attr.cap.max_recv_wr = 4;
	qp_attr.cap.max_send_sge = qp_attr.cap.max_recv_sge = 1;
	if (rdma_create_qp(client, NULL, &qp_attr))
		fail("rdma_create_qp (client): %s", strerror(errno));
	check_state(client, IBV_QPS_INIT, "client QP created");
	if (!client->send_cq || !client->recv_cq)
		fail("rdma_create_qp made no CQs");

	memset(&param, 0, sizeof(param));
	param.private_data = "hi";
	param.private_data_len = 3;
	param.retry_count = 7;
	param.rnr_retry_count = 7;
	if (rdma_connect(client, &param))
		fail("rdma_connect: %s", strerror(errno));

	ev = expect(ch, RDMA_CM_EVENT_CONNECT_REQUEST);
	server = ev->id;
	if (ev->listen_id != listener)
		fail("CONNECT_REQUEST names another listener");
	if (ev->param.conn.private_data_len < 3 || strcmp(ev->param.conn.private_data, "hi"))
		fail("the request's private data did not arrive");
	rdma_ack_cm_event(ev);
	memset(&qp_attr, 0, sizeof(qp_attr));
	qp_attr.qp_type = IBV_QPT_RC;
	qp_attr.cap.max_send_wr = qp_attr.cap.max_recv_wr = 4;
	qp_attr.cap.max_send_sge = qp_attr.cap.max_recv_sge = 1;
	if (rdma_create_qp(server, NULL, &qp_attr))
		fail("rdma_create_qp (server): %s", strerror(errno));
	rx_mr = ibv_reg_mr(server->pd, rx, sizeof(rx), IBV_ACCESS_LOCAL_WRITE);
	tx_mr = ibv_reg_mr(client->pd, tx, sizeof(tx), 0);
	if (!rx_mr || !tx_mr)
		fail("ibv_reg_mr: %s", strerror(errno));
	sge.addr = (uintptr_t)rx;
	sge.length = sizeof(rx);
	sge.lkey = rx_mr->lkey;
	memset(&rwr, 0, sizeof(rwr));
	rwr.wr_id = 1;
	rwr.sg_list = &sge;
	rwr.num_sge = 1;
	if (ibv_post_recv(server->qp, &rwr, &bad_rwr))
		fail("ibv_post_recv");
	if (rdma_accept(server, NULL))
		fail("rdma_accept: %s", strerror(errno));
	check_state(server, IBV_QPS_RTS, "server accepted");

	/* The client's ESTABLISHED (the REP arrived) comes before the server's (the RTU). */
	ev = expect(ch, RDMA_CM_EVENT_ESTABLISHED);
	if (ev->id != client)
		fail("the first ESTABLISHED is not the client's");
	rdma_ack_cm_event(ev);
	check_state(client, IBV_QPS_RTS, "client established");
	ev = expect(ch, RDMA_CM_EVENT_ESTABLISHED);
	if (ev->id != server)
		fail("the second ESTABLISHED is not the server's");
	rdma_ack_cm_event(ev);

	sge.addr = (uintptr_t)tx;
	sge.length = (uint32_t)strlen(tx) + 1;
	sge.lkey = tx_mr->lkey;
	memset(&swr, 0, sizeof(swr));
	swr.wr_id = 2;
	swr.sg_list = &sge;
	swr.num_sge = 1;
	swr.opcode = IBV_WR_SEND;
	swr.send_flags = IBV_SEND_SIGNALED;
	if (ibv_post_send(client->qp, &swr, &bad_swr))
		fail("ibv_post_send");
	for (n = 0; n == 0;)
		n = ibv_poll_cq(server->recv_cq, 1, &wc);
	if (n < 0 || wc.status != IBV_WC_SUCCESS || wc.wr_id != 1)
		fail("receive: %s", ibv_wc_status_str(wc.status));
	if (strcmp(rx, tx))
		fail("received \"%s\"", rx);
	for (n = 0; n == 0;)
		n = ibv_poll_cq(client->send_cq, 1, &wc);
	if (n < 0 || wc.status != IBV_WC_SUCCESS)
		fail("send: %s", ibv_wc_status_str(wc.status));

	if (rdma_disconnect(client))
		fail("rdma_disconnect (client): %s", strerror(errno));
	check_state(client, IBV_QPS_ERR, "client disconnected");
	ev = expect(ch, RDMA_CM_EVENT_DISCONNECTED);
	if (ev->id != server)
		fail("the first DISCONNECTED is not the server's");
	rdma_ack_cm_event(ev);
	if (rdma_disconnect(server))
		fail("rdma_disconnect (server): %s", strerror(errno));
	ev = expect(ch, RDMA_CM_EVENT_DISCONNECTED);
	if (ev->id != client)
		fail("the second DISCONNECTED is not the client's");
	rdma_ack_cm_event(ev);

	ibv_dereg_mr(rx_mr);
	ibv_dereg_mr(tx_mr);
	rdma_destroy_qp(server);
	rdma_destroy_qp(client);
	if (rdma_destroy_id(server) || rdma_destroy_id(client) || rdma_destroy_id(listener))
		fail("rdma_destroy_id: %s", strerror(errno));
	rdma_destroy_event_channel(ch);
	printf("cm_loopback: ok\n");
	return 0;
}
