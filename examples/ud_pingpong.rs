//! What rdma-core's `ibv_ud_pingpong` does, written against xrdma's Rust API: a UD QP on each
//! side, addresses exchanged over TCP as `lid:qpn:psn:gid`, then `--iters` round trips of
//! `--size`-byte SENDs, and the same two result lines.
//!
//! ```text
//! cargo run --example ud_pingpong -- --iface veth0                 # server
//! cargo run --example ud_pingpong -- --iface veth1 198.18.0.1      # client
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv6Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use xrdma_verbs::net::{self, BackendConfig, udp::UdpConfig, xdp::XdpConfig};
use xrdma_verbs::verbs::*;
use xrdma_verbs::wire::{Qkey, Qpn};

const RECV_WRID: u64 = 1;
const SEND_WRID: u64 = 2;
const QKEY: u32 = 0x1111_1111;
const GRH: usize = 40;

/// UD ping-pong over xrdma (like ibv_ud_pingpong).
#[derive(Parser)]
struct Args {
    /// Server to connect to; without it, wait for a client.
    servername: Option<String>,
    /// TCP port of the address exchange.
    #[arg(short, long, default_value_t = 18515)]
    port: u16,
    /// Interface (the xrdma device is xrdma_<iface>).
    #[arg(short = 'd', long, env = "XRDMA_IFACE")]
    iface: String,
    /// Backend.
    #[arg(long, env = "XRDMA_BACKEND", default_value = "xdp")]
    backend: String,
    /// Address to bind (udp backend).
    #[arg(long)]
    addr: Option<IpAddr>,
    /// Bytes per message (at most the path MTU).
    #[arg(short, long, default_value_t = 1024)]
    size: usize,
    /// Receives kept posted.
    #[arg(short, long, default_value_t = 500)]
    rx_depth: u32,
    /// Round trips.
    #[arg(short = 'n', long, default_value_t = 1000)]
    iters: u32,
    /// Sleep on CQ events instead of polling.
    #[arg(short, long)]
    events: bool,
    /// Local GID index.
    #[arg(short, long, default_value_t = 0)]
    gid_idx: usize,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("ud_pingpong: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let backend = match args.backend.as_str() {
        "xdp" => BackendConfig::Xdp(XdpConfig::new(&args.iface)),
        "udp" => BackendConfig::Udp(UdpConfig {
            addr: args.addr,
            ..UdpConfig::new(&args.iface)
        }),
        other => return Err(format!("unknown backend {other}").into()),
    };
    let ctx = Context::new(net::open(&backend)?, ContextConfig::default())?;
    let mtu = ctx.query_port(1)?.active_mtu.bytes();
    if args.size > mtu {
        return Err(format!(
            "requested size {} is larger than the port MTU {mtu}",
            args.size
        )
        .into());
    }
    let channel: Option<Arc<CompletionChannel>> = if args.events {
        Some(ctx.create_comp_channel()?)
    } else {
        None
    };
    let pd = ctx.alloc_pd()?;
    let mut buf = vec![0u8; args.size + GRH];
    // SAFETY: `buf` outlives every QP that uses the region (dropped at the end of `run`
    // after the QP).
    let mr = unsafe { pd.reg_mr(buf.as_mut_ptr(), buf.len(), AccessFlags::LOCAL_WRITE) }?;
    let cq = ctx.create_cq(args.rx_depth + 1, channel.as_ref())?;
    let cap = QpCap {
        max_send_wr: 1,
        max_recv_wr: args.rx_depth,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
    };
    let qp = pd.create_qp(&QpInitAttr {
        cap,
        ..QpInitAttr::ud(&cq, &cq, 1)
    })?;
    qp.modify(
        &QpAttr {
            qkey: QKEY,
            ..QpAttr::new(QpState::Init)
        },
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
    )?;
    let recv_sge = Sge {
        addr: buf.as_ptr() as u64,
        length: buf.len() as u32,
        lkey: mr.lkey(),
    };
    let post_recv = || {
        // SAFETY: the registered buffer outlives the QP.
        unsafe {
            qp.post_recv(&RecvWr {
                wr_id: RECV_WRID,
                sg_list: &[recv_sge],
            })
        }
    };
    for _ in 0..args.rx_depth {
        post_recv()?;
    }
    if channel.is_some() {
        cq.req_notify(false)?;
    }
    let psn = rand_psn();
    qp.modify(&QpAttr::new(QpState::Rtr), AttrMask::STATE)?;
    qp.modify(
        &QpAttr {
            sq_psn: psn,
            ..QpAttr::new(QpState::Rts)
        },
        AttrMask::STATE | AttrMask::SQ_PSN,
    )?;

    let gid = ctx.gid(args.gid_idx)?;
    let me = format!(
        "{:04x}:{:06x}:{:06x}:{}",
        0,
        qp.qpn().value(),
        psn,
        hex(&gid)
    );
    println!(
        "  local address:  LID 0x0000, QPN 0x{:06x}, PSN 0x{psn:06x}: GID {}",
        qp.qpn().value(),
        Ipv6Addr::from(gid.0)
    );
    let peer = exchange(&args, &me)?;
    let fields: Vec<&str> = peer.trim().split(':').collect();
    if fields.len() != 4 {
        return Err(format!("bad address from peer: {peer:?}").into());
    }
    let rqpn = u32::from_str_radix(fields[1], 16)?;
    let rpsn = u32::from_str_radix(fields[2], 16)?;
    let rgid = Gid(u128::from_str_radix(fields[3], 16)?.to_be_bytes());
    println!(
        "  remote address: LID 0x0000, QPN 0x{rqpn:06x}, PSN 0x{rpsn:06x}, GID {}",
        Ipv6Addr::from(rgid.0)
    );
    let ah = pd.create_ah(&AhAttr {
        sgid_index: args.gid_idx as u8,
        ..AhAttr::new(rgid)
    })?;
    let send_sge = Sge {
        addr: buf.as_ptr() as u64 + GRH as u64,
        length: args.size as u32,
        lkey: mr.lkey(),
    };
    let post_send = || {
        let wr = SendWr {
            wr_id: SEND_WRID,
            opcode: SendOpcode::Send,
            send_flags: SendFlags::SIGNALED,
            sg_list: &[send_sge],
            imm_data: 0,
            rdma: None,
            atomic: None,
            ud: Some(UdDest {
                ah: &ah,
                remote_qpn: Qpn::new_masked(rqpn),
                remote_qkey: Qkey::new(QKEY),
            }),
        };
        // SAFETY: the registered buffer outlives the QP.
        unsafe { qp.post_send(&wr) }
    };

    let start = Instant::now();
    let (mut rcnt, mut scnt) = (0u32, 0u32);
    let mut pending = RECV_WRID;
    if args.servername.is_some() {
        post_send()?;
        pending |= SEND_WRID;
    }
    let mut wcs = [WorkCompletion::default(); 2];
    while rcnt < args.iters || scnt < args.iters {
        if let Some(ch) = &channel {
            let fired = ctx.get_cq_event(ch)?;
            fired.ack_events(1)?;
            fired.req_notify(false)?;
        }
        let n = loop {
            let n = cq.poll(&mut wcs);
            if n > 0 || channel.is_some() {
                break n;
            }
        };
        for wc in &wcs[..n] {
            if wc.status != WcStatus::Success {
                return Err(format!(
                    "Failed status {} ({}) for wr_id {}",
                    wc.status.as_str(),
                    wc.status as u32,
                    wc.wr_id
                )
                .into());
            }
            match wc.wr_id {
                SEND_WRID => scnt += 1,
                RECV_WRID => {
                    post_recv()?;
                    rcnt += 1;
                }
                other => return Err(format!("Completion for unknown wr_id {other}").into()),
            }
            pending &= !wc.wr_id;
            if scnt < args.iters && pending == 0 {
                post_send()?;
                pending = RECV_WRID | SEND_WRID;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = args.size as u64 * u64::from(args.iters) * 2;
    println!(
        "{bytes} bytes in {secs:.2} seconds = {:.2} Mbit/sec",
        bytes as f64 * 8.0 / secs / 1e6
    );
    println!(
        "{} iters in {secs:.2} seconds = {:.2} usec/iter",
        args.iters,
        secs * 1e6 / f64::from(args.iters)
    );
    drop(qp);
    drop(mr);
    Ok(())
}

fn hex(gid: &Gid) -> String {
    gid.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn rand_psn() -> u32 {
    xrdma_verbs::rng::Rng::from_entropy().next_u32() & 0xff_ffff
}

/// Swaps address lines with the peer: the server answers after reading the client's.
fn exchange(args: &Args, me: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut line = String::new();
    match &args.servername {
        Some(server) => {
            let mut s = connect_retrying(server, args.port)?;
            writeln!(s, "{me}")?;
            BufReader::new(s).read_line(&mut line)?;
        }
        None => {
            let listener = TcpListener::bind(("0.0.0.0", args.port))?;
            let (mut s, _) = listener.accept()?;
            BufReader::new(s.try_clone()?).read_line(&mut line)?;
            writeln!(s, "{me}")?;
        }
    }
    Ok(line)
}

fn connect_retrying(server: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for _ in 0..100 {
        match TcpStream::connect((server, port)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(last.expect("at least one attempt"))
}
