//! What the pingpong examples share, as rdma-core's `pingpong.c` does for its programs: the
//! backend from the command line, the `lid:qpn:psn:gid` addresses swapped over TCP exactly as
//! rdma-core's programs swap them (so each example talks to its rdma-core twin), and the two
//! result lines.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xrdma_verbs::net::{BackendConfig, udp::UdpConfig, xdp::XdpConfig};
use xrdma_verbs::verbs::{
    CompletionChannel, Context, ContextConfig, Cq, Gid, WcStatus, WorkCompletion,
};

/// Work request IDs of the receive and the send, as in rdma-core's pingpongs.
pub const RECV_WRID: u64 = 1;
pub const SEND_WRID: u64 = 2;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The options both pingpongs take, as rdma-core's do (`-s` and `-m` are each program's).
#[derive(clap::Args)]
pub struct Common {
    /// Server to connect to; without it, wait for a client.
    pub servername: Option<String>,
    /// TCP port of the address exchange.
    #[arg(short, long, default_value_t = 18515)]
    pub port: u16,
    /// Interface (the xrdma device is xrdma_<iface>).
    #[arg(short = 'd', long, env = "XRDMA_IFACE")]
    pub iface: String,
    /// Backend.
    #[arg(long, env = "XRDMA_BACKEND", default_value = "xdp")]
    pub backend: String,
    /// Address to bind (udp backend).
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// Receives kept posted.
    #[arg(short, long, default_value_t = 500)]
    pub rx_depth: u32,
    /// Round trips.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub iters: u32,
    /// Sleep on CQ events instead of polling.
    #[arg(short, long)]
    pub events: bool,
    /// Local GID index.
    #[arg(short, long, default_value_t = 0)]
    pub gid_idx: usize,
}

impl Common {
    /// Opens the device the options name, and a completion channel with `--events`.
    pub fn open(&self) -> Result<(Context, Option<Arc<CompletionChannel>>)> {
        let backend = match self.backend.as_str() {
            "xdp" => BackendConfig::Xdp(XdpConfig::new(&self.iface)),
            "udp" => BackendConfig::Udp(UdpConfig {
                addr: self.addr,
                ..UdpConfig::new(&self.iface)
            }),
            other => return Err(format!("unknown backend {other}").into()),
        };
        let ctx = Context::new(xrdma_verbs::net::open(&backend)?, ContextConfig::default())?;
        let channel = if self.events {
            Some(ctx.create_comp_channel()?)
        } else {
            None
        };
        Ok((ctx, channel))
    }
}

/// A random first PSN.
pub fn rand_psn() -> u32 {
    xrdma_verbs::rng::Rng::from_entropy().next_u32() & 0xff_ffff
}

/// One side's address, as the pingpong programs print and exchange it.
pub struct Dest {
    pub qpn: u32,
    pub psn: u32,
    pub gid: Gid,
}

/// Bytes of one address message: `sizeof "0000:000000:000000:" + 32 hex digits`, NUL
/// included, as rdma-core writes and reads it.
const MSG_LEN: usize = 52;

impl Dest {
    fn message(&self) -> [u8; MSG_LEN] {
        let gid: String = self.gid.0.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("{:04x}:{:06x}:{:06x}:{gid}", 0, self.qpn, self.psn);
        let mut msg = [0u8; MSG_LEN];
        msg[..text.len()].copy_from_slice(text.as_bytes());
        msg
    }

    fn parse(msg: &[u8]) -> Result<Dest> {
        let end = msg.iter().position(|b| *b == 0).unwrap_or(msg.len());
        let line = std::str::from_utf8(&msg[..end])?;
        let fields: Vec<&str> = line.trim().split(':').collect();
        if fields.len() != 4 {
            return Err(format!("bad address from peer: {line:?}").into());
        }
        Ok(Dest {
            qpn: u32::from_str_radix(fields[1], 16)?,
            psn: u32::from_str_radix(fields[2], 16)?,
            gid: Gid(u128::from_str_radix(fields[3], 16)?.to_be_bytes()),
        })
    }

    fn print(&self, which: &str, gid_sep: char) {
        println!(
            "  {which} LID 0x0000, QPN 0x{:06x}, PSN 0x{:06x}{gid_sep} GID {}",
            self.qpn,
            self.psn,
            Ipv6Addr::from(self.gid.0)
        );
    }
}

/// Prints our address, swaps it with the peer's over TCP `port`, calls `connect` with the
/// peer's (to bring our QP up towards it), prints and returns it. As in rdma-core: the
/// client (given `server`) sends first, reads the answer, says "done" and connects; the
/// server reads, connects, and only then answers, so it is ready before the client sends.
/// `local_gid_sep` is what comes before "GID" in our line: ',' in ibv_rc_pingpong, ':' in
/// ibv_ud_pingpong.
pub fn exchange(
    server: Option<&str>,
    port: u16,
    me: &Dest,
    local_gid_sep: char,
    connect: impl FnOnce(&Dest) -> Result<()>,
) -> Result<Dest> {
    me.print("local address: ", local_gid_sep);
    let mut msg = [0u8; MSG_LEN];
    let peer = match server {
        Some(server) => {
            let mut s = connect_retrying(server, port)?;
            s.write_all(&me.message())?;
            s.read_exact(&mut msg)?;
            s.write_all(b"done\0")?;
            let peer = Dest::parse(&msg)?;
            connect(&peer)?;
            peer
        }
        None => {
            let listener = TcpListener::bind(("0.0.0.0", port))?;
            let (mut s, _) = listener.accept()?;
            s.read_exact(&mut msg)?;
            let peer = Dest::parse(&msg)?;
            connect(&peer)?;
            s.write_all(&me.message())?;
            // The client's "done"; it may close right after.
            let _ = s.read(&mut msg)?;
            peer
        }
    };
    peer.print("remote address:", ',');
    Ok(peer)
}

fn connect_retrying(server: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for _ in 0..100 {
        match TcpStream::connect((server, port)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(last.expect("at least one attempt"))
}

/// The two result lines of rdma-core's pingpong programs.
fn print_result(size: usize, iters: u32, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let bytes = size as u64 * u64::from(iters) * 2;
    println!(
        "{bytes} bytes in {secs:.2} seconds = {:.2} Mbit/sec",
        bytes as f64 * 8.0 / secs / 1e6
    );
    println!(
        "{iters} iters in {secs:.2} seconds = {:.2} usec/iter",
        secs * 1e6 / f64::from(iters)
    );
}

/// The ping-pong of `size`-byte messages: `common.iters` round trips, the client (the end
/// given a server name) sending first; each side sends once both its last send and a
/// receive completed, and reposts each receive. With `channel`, it sleeps on CQ events
/// instead of polling. Prints rdma-core's result lines.
pub fn ping_pong(
    ctx: &Context,
    cq: &Cq,
    channel: Option<&Arc<CompletionChannel>>,
    common: &Common,
    size: usize,
    post_send: impl Fn() -> std::result::Result<(), xrdma_verbs::verbs::Error>,
    post_recv: impl Fn() -> std::result::Result<(), xrdma_verbs::verbs::Error>,
) -> Result<()> {
    let (iters, client) = (common.iters, common.servername.is_some());
    let start = Instant::now();
    let (mut rcnt, mut scnt) = (0u32, 0u32);
    let mut pending = RECV_WRID;
    if client {
        post_send()?;
        pending |= SEND_WRID;
    }
    let mut wcs = [WorkCompletion::default(); 2];
    while rcnt < iters || scnt < iters {
        if let Some(ch) = channel {
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
            if scnt < iters && pending == 0 {
                post_send()?;
                pending = RECV_WRID | SEND_WRID;
            }
        }
    }
    print_result(size, iters, start.elapsed());
    Ok(())
}
