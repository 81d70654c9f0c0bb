//! The `xrdma` command: device information, performance tests, and running programs over
//! xrdma.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use xrdma::perf::{self, Role, Test};
use xrdma_verbs::net::{
    self, BackendConfig,
    udp::UdpConfig,
    xdp::{XdpConfig, XdpMode},
};
use xrdma_verbs::verbs::{Context, ContextConfig};

/// RDMA without RDMA hardware: RoCEv2 over AF_XDP or kernel UDP.
#[derive(Parser)]
#[command(name = "xrdma", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a device offers (like ibv_devinfo). Without --iface, list the interfaces.
    Devinfo(BackendArgs),
    /// Measure a path between two hosts (like perftest): run --server on one, --connect on
    /// the other.
    Perf(PerfArgs),
    /// Run a program with its TCP sockets over xrdma: `xrdma run [OPTIONS] -- PROGRAM
    /// ARGS` (LD_PRELOAD=libxrdma_preload.so). Peers without xrdma get kernel TCP.
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// AF_XDP (needs root).
    Xdp,
    /// Kernel UDP socket (no privilege).
    Udp,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Driver hook and zero-copy where possible, else copy, else generic hook.
    Auto,
    /// Zero-copy or fail.
    Zc,
    /// Driver hook, copy mode.
    Drv,
    /// Generic (skb) hook.
    Skb,
}

#[derive(Args)]
struct BackendArgs {
    /// Interface to use.
    #[arg(long, env = "XRDMA_IFACE")]
    iface: Option<String>,
    /// Frame I/O backend.
    #[arg(long, value_enum, env = "XRDMA_BACKEND", default_value = "xdp")]
    backend: Backend,
    /// RoCEv2 UDP port.
    #[arg(long, env = "XRDMA_UDP_PORT", default_value_t = 4791)]
    port: u16,
    /// Address to bind (udp backend; e.g. 127.0.0.2 to run two endpoints on loopback).
    #[arg(long)]
    addr: Option<IpAddr>,
    /// How the xdp backend attaches and binds.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: Mode,
    /// udp backend: one datagram per system call message, without UDP GSO and GRO.
    #[arg(long)]
    no_offload: bool,
}

impl BackendArgs {
    fn config(&self) -> Result<BackendConfig, String> {
        let iface = self
            .iface
            .clone()
            .ok_or("--iface (or XRDMA_IFACE) is required")?;
        Ok(match self.backend {
            Backend::Xdp => {
                if self.addr.is_some() {
                    return Err("--addr applies to the udp backend only".into());
                }
                if self.no_offload {
                    return Err("--no-offload applies to the udp backend only".into());
                }
                let mut c = XdpConfig::new(iface);
                c.port = self.port;
                c.mode = match self.xdp_mode {
                    Mode::Auto => XdpMode::Auto,
                    Mode::Zc => XdpMode::ZeroCopy,
                    Mode::Drv => XdpMode::DriverCopy,
                    Mode::Skb => XdpMode::Skb,
                };
                BackendConfig::Xdp(c)
            }
            Backend::Udp => {
                let mut c = UdpConfig::new(iface);
                c.port = self.port;
                c.addr = self.addr;
                c.offload = !self.no_offload;
                BackendConfig::Udp(c)
            }
        })
    }
}

#[derive(Args)]
struct PerfArgs {
    /// Test to run: raw-lat, raw-bw, ud-lat, ud-bw, rc-send-lat, rc-send-bw, rc-write-lat,
    /// rc-write-bw, rc-read-lat, rc-read-bw, rc-atomic-lat, cm-connect, rs-lat, rs-bw,
    /// rs-dgram-lat, or tcp-lat and tcp-bw (the kernel's TCP, for comparison).
    test: Test,
    /// Wait for a client.
    #[arg(long, conflicts_with = "connect", required_unless_present = "connect")]
    server: bool,
    /// Connect to the server at this address.
    #[arg(long)]
    connect: Option<IpAddr>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Payload bytes per message (RC tests: up to 1 GiB).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages to send (cm-connect: connections to make).
    #[arg(long, conflicts_with = "duration")]
    iters: Option<u64>,
    /// Seconds to run, instead of a message count.
    #[arg(long)]
    duration: Option<f64>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// TCP port of the control connection.
    #[arg(long, default_value_t = perf::DEFAULT_OOB_PORT)]
    oob_port: u16,
    /// rdma_cm port (PS_TCP) cm-connect and the socket tests listen on (server) or connect
    /// to (client).
    #[arg(long, default_value_t = perf::DEFAULT_CM_PORT)]
    cm_port: u16,
    /// Seconds to wait for the peer.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Socket tests: microseconds a blocked call polls before it sleeps (default: rsocket's
    /// 10 for rs-*, 0 for tcp-*; a large value spins, as sockperf's busy polling does).
    #[arg(long)]
    polling_time: Option<u64>,
}

fn duration(secs: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--{what} must be a non-negative number of seconds"))
}

fn perf_cmd(args: &PerfArgs) -> Result<(), String> {
    let opts = perf::Options {
        test: args.test,
        role: match args.connect {
            Some(ip) => Role::Client(ip),
            None => Role::Server,
        },
        backend: args.backend.config()?,
        size: args.size,
        iters: args.iters,
        duration: args.duration.map(|d| duration(d, "duration")).transpose()?,
        oob_port: args.oob_port,
        cm_port: args.cm_port,
        timeout: duration(args.timeout, "timeout")?,
        polling_time: args.polling_time.map(Duration::from_micros),
    };
    let report = perf::run(&opts).map_err(|e| e.to_string())?;
    println!("{}", report.human());
    if args.json {
        println!("{}", report.json());
    }
    Ok(())
}

fn devinfo_cmd(args: &BackendArgs) -> Result<(), String> {
    if args.iface.is_none() {
        print!(
            "{}",
            xrdma::devinfo::list_interfaces().map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let io = net::open(&args.config()?).map_err(|e| e.to_string())?;
    let config = ContextConfig {
        progress_thread: false,
        ..ContextConfig::default()
    };
    let ctx = Context::new(io, config).map_err(|e| e.to_string())?;
    let port = ctx.query_port(1).map_err(|e| e.to_string())?;
    print!(
        "{}",
        xrdma::devinfo::describe(ctx.link(), Some((ctx.query_device(), port)))
    );
    Ok(())
}

#[derive(Args)]
struct RunArgs {
    /// Interfaces xrdma may use, comma-separated (default: whichever the route picks).
    #[arg(long)]
    iface: Option<String>,
    /// Frame I/O backend (default: xdp where the process may use AF_XDP, else udp).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// RoCEv2 UDP port.
    #[arg(long)]
    port: Option<u16>,
    /// Which connections and listeners go over xrdma: `all` (default), `none`, or
    /// comma-separated `ADDR[/PREFIX][:PORT]` and `*:PORT` (XRDMA_TCP).
    #[arg(long)]
    tcp: Option<String>,
    /// Print one line per socket saying where it went and why (XRDMA_DEBUG=1).
    #[arg(long)]
    debug: bool,
    /// The preload library (default: libxrdma_preload.so beside this command, or in
    /// ../lib).
    #[arg(long, env = "XRDMA_PRELOAD_LIB")]
    lib: Option<PathBuf>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    program: Vec<OsString>,
}

/// Where the preload library is: beside this command (as cargo builds them), or in the
/// `lib` directory of the prefix it is installed in.
fn preload_lib() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this command: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let tried = [
        dir.join("libxrdma_preload.so"),
        dir.join("../lib/libxrdma_preload.so"),
    ];
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "libxrdma_preload.so is not at {} or {}: build it (cargo build -p xrdma-preload) \
             or give --lib",
            tried[0].display(),
            tried[1].display()
        )
    })
}

fn run_cmd(args: &RunArgs) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let lib = match &args.lib {
        Some(lib) if lib.is_file() => lib.clone(),
        Some(lib) => return Err(format!("--lib {}: no such file", lib.display())),
        None => preload_lib()?,
    };
    let lib = lib
        .canonicalize()
        .map_err(|e| format!("{}: {e}", lib.display()))?;
    let mut preload = lib.into_os_string();
    if let Some(others) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(" ");
        preload.push(others);
    }
    let mut cmd = std::process::Command::new(&args.program[0]);
    cmd.args(&args.program[1..]).env("LD_PRELOAD", preload);
    if let Some(iface) = &args.iface {
        cmd.env("XRDMA_IFACE", iface);
    }
    if let Some(backend) = args.backend {
        cmd.env(
            "XRDMA_BACKEND",
            match backend {
                Backend::Xdp => "xdp",
                Backend::Udp => "udp",
            },
        );
    }
    if let Some(port) = args.port {
        cmd.env("XRDMA_UDP_PORT", port.to_string());
    }
    if let Some(tcp) = &args.tcp {
        cmd.env("XRDMA_TCP", tcp);
    }
    if args.debug {
        cmd.env("XRDMA_DEBUG", "1");
    }
    let e = cmd.exec();
    Err(format!(
        "running {}: {e}",
        args.program[0].to_string_lossy()
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Devinfo(args) => devinfo_cmd(args),
        Command::Perf(args) => perf_cmd(args),
        Command::Run(args) => run_cmd(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xrdma: {e}");
            ExitCode::FAILURE
        }
    }
}
