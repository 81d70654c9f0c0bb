//! Hosts and the topologies that join them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::{NAME_PREFIX, remove_stale};
use crate::{Error, Netns, cmd};

/// Topologies made so far by this process; part of every name and subnet.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Longest interface name Linux accepts (`IFNAMSIZ - 1`).
const IFNAME_MAX: usize = 15;

/// Prefix length of every IPv4 subnet this crate configures.
const IPV4_PREFIX: u8 = 24;

/// Prefix length of every IPv6 subnet this crate configures.
const IPV6_PREFIX: u8 = 64;

/// nftables table (bridge family) holding the loss rules in the switch namespace.
const LOSS_TABLE: &str = "xrdma_loss";

/// Named nftables counter incremented by every drop rule.
const LOSS_COUNTER: &str = "dropped";

/// Name of the bridge in the switch namespace.
const BRIDGE: &str = "br0";

/// Random packet loss applied by the switch of a [`Topology::switched`] network.
///
/// The switch drops each matching frame independently with probability
/// `fraction`, using an nftables rule in the `bridge` family on the forward
/// hook. ARP is never dropped, nor is IPv6 neighbour discovery (its IPv6
/// counterpart), so address resolution always works.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Loss {
    /// Probability, from 0.0 to 1.0, that a matching frame is dropped
    /// (applied with a resolution of 1/10000).
    pub fraction: f64,
    /// If set, only IPv4/IPv6 UDP datagrams to this destination port are
    /// dropped (so pings and a TCP control channel are not); if `None`, all
    /// IPv4/IPv6 packets are. Only the first fragment of a fragmented datagram
    /// carries the port, so later fragments are never dropped.
    pub only_udp_port: Option<u16>,
}

impl Loss {
    /// No loss at all.
    pub const NONE: Loss = Loss {
        fraction: 0.0,
        only_udp_port: None,
    };

    /// Drops `fraction` of all IPv4 and IPv6 packets.
    pub fn all(fraction: f64) -> Loss {
        Loss {
            fraction,
            only_udp_port: None,
        }
    }

    /// Drops `fraction` of the UDP datagrams sent to destination port `port`
    /// (e.g. 4791, RoCE v2), and nothing else.
    pub fn udp_port(fraction: f64, port: u16) -> Loss {
        Loss {
            fraction,
            only_udp_port: Some(port),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if (0.0..=1.0).contains(&self.fraction) {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "loss fraction {} is not between 0.0 and 1.0",
                self.fraction
            )))
        }
    }

    /// The nftables script installing this loss in a switch namespace.
    fn ruleset(&self) -> String {
        let threshold = (self.fraction * 10_000.0).round() as u32;
        let drop =
            format!("numgen random mod 10000 < {threshold} counter name \"{LOSS_COUNTER}\" drop");
        let rules = match self.only_udp_port {
            Some(port) => format!(
                "meta protocol ip udp dport {port} {drop}\n\
                 \t\tmeta protocol ip6 udp dport {port} {drop}"
            ),
            None => format!(
                "meta protocol ip {drop}\n\
                 \t\tmeta protocol ip6 icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, \
                 nd-router-solicit, nd-router-advert, nd-redirect }} accept\n\
                 \t\tmeta protocol ip6 {drop}"
            ),
        };
        format!(
            "table bridge {LOSS_TABLE} {{\n\
             \tcounter {LOSS_COUNTER} {{ }}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority 0; policy accept;\n\
             \t\t{rules}\n\
             \t}}\n\
             }}\n"
        )
    }
}

/// One end of a link: a network namespace with one configured interface.
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    iface: String,
    ipv4: Ipv4Addr,
    prefix: u8,
    mac: [u8; 6],
    ipv6: Option<Ipv6Addr>,
}

impl Host {
    /// The host's network namespace; use [`Netns::run`] to open sockets in it.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Name of the host's veth interface (inside its namespace).
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface's IPv4 address (in 198.18.0.0/15).
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// Prefix length of [`ipv4`](Host::ipv4)'s subnet.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The interface's MAC address (locally administered, unique in its topology).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's IPv6 address (in 2001:2::/48, prefix length 64), if the
    /// topology was built with [`TopologyBuilder::ipv6`]. Otherwise IPv6 is
    /// disabled in the host's namespace.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
    }

    /// `xrdma run --debug --backend xdp --iface IFACE --lib LIB OPTIONS -- PROGRAM` on this
    /// host: `program` with its TCP over xrdma on the host's interface, the `xrdma` command
    /// and preload library given by path.
    pub fn xrdma_run(
        &self,
        xrdma: &std::path::Path,
        lib: &std::path::Path,
        options: &[&str],
        program: &str,
    ) -> std::process::Command {
        let mut cmd = self.ns.command(xrdma);
        cmd.args([
            "run",
            "--debug",
            "--backend",
            "xdp",
            "--iface",
            self.iface(),
        ])
        .arg("--lib")
        .arg(lib)
        .args(options)
        .args(["--", program]);
        cmd
    }

    /// Pings `to` from this host (`ping -c1 -W1` inside its namespace) until it
    /// answers, or fails with [`Error::Unreachable`] after `timeout`.
    pub fn wait_reachable(&self, to: impl Into<IpAddr>, timeout: Duration) -> Result<(), Error> {
        let to = to.into();
        let start = Instant::now();
        loop {
            let mut ping = self.ns.command("ping");
            ping.args(["-n", "-c1", "-W1"]).arg(to.to_string());
            let context = format!("pinging {to} from network namespace {}", self.ns.name());
            let last_output = match cmd::run(&mut ping, &context, None) {
                Ok(_) => return Ok(()),
                Err(Error::Command { stderr, .. }) => stderr,
                // Could not run ping at all: retrying will not help.
                Err(e) => return Err(e),
            };
            if start.elapsed() >= timeout {
                return Err(Error::Unreachable {
                    from: self.ns.name().to_owned(),
                    to,
                    waited: start.elapsed(),
                    last_output,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Options for building a [`Topology`]; start with [`Topology::builder`].
#[derive(Clone, Debug)]
pub struct TopologyBuilder {
    queues: Option<u32>,
    mtu: Option<u32>,
    ipv6: bool,
    ready_timeout: Duration,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            queues: None,
            mtu: None,
            ipv6: false,
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl TopologyBuilder {
    /// Gives every veth `n` receive and `n` transmit queues (`numrxqueues`,
    /// `numtxqueues`); the default is the kernel's, one of each.
    pub fn rx_queues(mut self, n: u32) -> Self {
        self.queues = Some(n);
        self
    }

    /// Sets the MTU of every veth (and of the bridge); the default is 1500.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Also gives every host an IPv6 address, `2001:2:0:N::H/64` (no
    /// duplicate address detection, no link-local address). Without this,
    /// IPv6 is disabled in the namespaces.
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// How long building waits for the hosts to reach each other (default
    /// 10 s) before failing with [`Error::Unreachable`].
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Builds two hosts, A (`.1`) and B (`.2`), joined by one veth pair; see
    /// [`Topology::pair`].
    pub fn pair(self) -> Result<Topology, Error> {
        self.validate()?;
        let names = Names::next()?;
        let a_ns = Netns::new(names.ns("a"))?;
        let b_ns = Netns::new(names.ns("b"))?;
        let (a_if, b_if) = (names.iface("a")?, names.iface("b")?);
        let (a_mac, b_mac) = (names.mac(1, 0), names.mac(2, 0));
        self.prepare_ns(&a_ns, !self.ipv6)?;
        self.prepare_ns(&b_ns, !self.ipv6)?;
        self.add_veth((&a_ns, &a_if, a_mac), (&b_ns, &b_if, b_mac))?;
        let a = self.configure_host(a_ns, a_if, a_mac, &names, 1)?;
        let b = self.configure_host(b_ns, b_if, b_mac, &names, 2)?;
        let topology = Topology {
            hosts: vec![a, b],
            switch: None,
            loss: Loss::NONE,
        };
        topology.wait_ready(self.ready_timeout)?;
        Ok(topology)
    }

    /// Builds `hosts` hosts (`.1`, `.2`, ...) each joined by a veth pair to
    /// a switch namespace holding a Linux bridge that applies `loss`; see
    /// [`Topology::switched`].
    pub fn switched(self, hosts: usize, loss: Loss) -> Result<Topology, Error> {
        self.validate()?;
        loss.validate()?;
        if !(1..=254).contains(&hosts) {
            return Err(Error::Invalid(format!(
                "a switched topology needs 1 to 254 hosts, not {hosts}"
            )));
        }
        let names = Names::next()?;
        let sw_ns = Netns::new(names.ns("sw"))?;
        self.prepare_ns(&sw_ns, true)?;
        let sw = sw_ns.name().to_owned();
        let ctx = format!("creating bridge {BRIDGE} in network namespace {sw}");
        let mut add_bridge = vec!["-n", &sw, "link", "add", BRIDGE];
        let mtu = self.mtu.map(|m| m.to_string());
        if let Some(mtu) = &mtu {
            add_bridge.extend(["mtu", mtu]);
        }
        add_bridge.extend(["type", "bridge"]);
        cmd::ip(&add_bridge, &ctx)?;
        cmd::ip(&["-n", &sw, "link", "set", BRIDGE, "up"], &ctx)?;
        let mut switch = Switch {
            ns: sw_ns,
            ports: Vec::with_capacity(hosts),
        };
        let mut topology_hosts = Vec::with_capacity(hosts);
        for i in 0..hosts {
            let number = u8::try_from(i + 1).expect("at most 254 hosts");
            let host_ns = Netns::new(names.ns(&format!("h{i}")))?;
            let host_if = names.iface(&format!("h{i}"))?;
            let port_if = names.iface(&format!("s{i}"))?;
            let (host_mac, port_mac) = (names.mac(number, 0), names.mac(number, 1));
            self.prepare_ns(&host_ns, !self.ipv6)?;
            self.add_veth(
                (&host_ns, &host_if, host_mac),
                (&switch.ns, &port_if, port_mac),
            )?;
            let ctx = format!("attaching {port_if} to bridge {BRIDGE} in network namespace {sw}");
            cmd::ip(
                &["-n", &sw, "link", "set", &port_if, "master", BRIDGE],
                &ctx,
            )?;
            cmd::ip(&["-n", &sw, "link", "set", &port_if, "up"], &ctx)?;
            switch.ports.push(port_if);
            topology_hosts.push(self.configure_host(host_ns, host_if, host_mac, &names, number)?);
        }
        let mut topology = Topology {
            hosts: topology_hosts,
            switch: Some(switch),
            loss: Loss::NONE,
        };
        // Check the links before any loss makes the check itself unreliable.
        topology.wait_ready(self.ready_timeout)?;
        if loss.fraction > 0.0 {
            let switch = topology.switch.as_ref().expect("switched topology");
            let mut nft = switch.ns.command("nft");
            nft.args(["-f", "-"]);
            let ctx = format!("installing packet loss rules in network namespace {sw}");
            cmd::run(&mut nft, &ctx, Some(&loss.ruleset()))?;
            topology.loss = loss;
        }
        Ok(topology)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.queues == Some(0) {
            return Err(Error::Invalid("a veth needs at least one queue".into()));
        }
        match self.mtu {
            Some(mtu) if mtu < 68 => Err(Error::Invalid(format!(
                "MTU {mtu} is below IPv4's minimum of 68"
            ))),
            Some(mtu) if self.ipv6 && mtu < 1280 => Err(Error::Invalid(format!(
                "MTU {mtu} is below IPv6's minimum of 1280"
            ))),
            _ => Ok(()),
        }
    }

    /// Disables IPv6 in a fresh namespace if asked, so it sends no IPv6 at all
    /// (no link-local addresses, router solicitations or MLD reports).
    fn prepare_ns(&self, ns: &Netns, disable_ipv6: bool) -> Result<(), Error> {
        if disable_ipv6 {
            // `default` applies to interfaces created later, `all` to `lo`.
            ns.set_net_sysctl("ipv6/conf/default/disable_ipv6", "1", true)?;
            ns.set_net_sysctl("ipv6/conf/all/disable_ipv6", "1", true)?;
        }
        Ok(())
    }

    /// Creates a veth pair with one end directly in each namespace, so that
    /// nothing is ever created in the caller's namespace.
    fn add_veth(
        &self,
        (ns, iface, mac): (&Netns, &str, [u8; 6]),
        (peer_ns, peer_iface, peer_mac): (&Netns, &str, [u8; 6]),
    ) -> Result<(), Error> {
        let options = {
            let mut o = Vec::new();
            if let Some(q) = self.queues {
                o.extend(["numtxqueues".to_owned(), q.to_string()]);
                o.extend(["numrxqueues".to_owned(), q.to_string()]);
            }
            if let Some(mtu) = self.mtu {
                o.extend(["mtu".to_owned(), mtu.to_string()]);
            }
            o
        };
        let mut args: Vec<String> = ["-n", ns.name(), "link", "add", iface, "address"]
            .map(str::to_owned)
            .into();
        args.push(mac_string(mac));
        args.extend(options.iter().cloned());
        args.extend(["type", "veth", "peer", "name", peer_iface, "address"].map(str::to_owned));
        args.push(mac_string(peer_mac));
        args.extend(options);
        args.extend(["netns", peer_ns.name()].map(str::to_owned));
        cmd::ip(
            &args,
            &format!(
                "creating veth pair {iface} (in {}) / {peer_iface} (in {})",
                ns.name(),
                peer_ns.name()
            ),
        )?;
        Ok(())
    }

    /// Brings up `lo`, addresses `iface` and brings it up.
    fn configure_host(
        &self,
        ns: Netns,
        iface: String,
        mac: [u8; 6],
        names: &Names,
        number: u8,
    ) -> Result<Host, Error> {
        let n = ns.name().to_owned();
        let ctx = format!("configuring {iface} in network namespace {n}");
        let ipv4 = names.ipv4(number);
        cmd::ip(&["-n", &n, "link", "set", "lo", "up"], &ctx)?;
        let ipv6 = if self.ipv6 {
            let v6 = names.ipv6(number);
            cmd::ip(
                &["-n", &n, "link", "set", &iface, "addrgenmode", "none"],
                &ctx,
            )?;
            let addr = format!("{v6}/{IPV6_PREFIX}");
            cmd::ip(
                &["-n", &n, "addr", "add", &addr, "dev", &iface, "nodad"],
                &ctx,
            )?;
            Some(v6)
        } else {
            None
        };
        let addr = format!("{ipv4}/{IPV4_PREFIX}");
        cmd::ip(&["-n", &n, "addr", "add", &addr, "dev", &iface], &ctx)?;
        cmd::ip(&["-n", &n, "link", "set", &iface, "up"], &ctx)?;
        Ok(Host {
            ns,
            iface,
            ipv4,
            prefix: IPV4_PREFIX,
            mac,
            ipv6,
        })
    }
}

/// The switch of a switched topology: a namespace holding bridge `br0`.
struct Switch {
    ns: Netns,
    ports: Vec<String>,
}

/// A set of [`Host`]s joined by veth pairs, torn down when dropped.
///
/// Building returns once the first host can ping every other one. Names are
/// unique per process and topology: namespaces are `xr-<pid>-<n>-<role>`,
/// interfaces `x<pid % 100000 as 5 digits><n><role>`, so topologies can be
/// built in parallel, from threads of one process and from several processes.
/// Building first deletes namespaces left by dead processes (named
/// `xr-<pid>-...` with no `/proc/<pid>`).
///
/// Addresses are in 198.18.0.0/15: host `H` (1-based) of a topology gets
/// `198.(18 + N / 256).(N % 256).H/24`, with `N` in `0..512` derived from the
/// pid and the process's topology counter (and `2001:2:0:N::H/64` with
/// [`TopologyBuilder::ipv6`]).
///
/// Dropping deletes the namespaces in reverse order of creation (the veths
/// die with them); errors are printed to stderr, not raised.
pub struct Topology {
    hosts: Vec<Host>,
    switch: Option<Switch>,
    loss: Loss,
}

impl Topology {
    /// Options for a topology (queues, MTU, IPv6).
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// Two hosts, A at `198.18.N.1/24` and B at `198.18.N.2/24`, each in its
    /// own namespace, joined by one veth pair.
    pub fn pair() -> Result<Topology, Error> {
        Topology::builder().pair()
    }

    /// `hosts` hosts (1 to 254), host `i` at `198.18.N.(i+1)/24`, each joined
    /// by a veth pair to a third "switch" namespace where the other ends are
    /// ports of bridge `br0`, which drops packets as `loss` says.
    pub fn switched(hosts: usize, loss: Loss) -> Result<Topology, Error> {
        Topology::builder().switched(hosts, loss)
    }

    /// All hosts, in order of their addresses.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i` (0-based).
    ///
    /// # Panics
    ///
    /// If there is no such host.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// The first host (A of a pair).
    pub fn a(&self) -> &Host {
        self.host(0)
    }

    /// The second host (B of a pair).
    ///
    /// # Panics
    ///
    /// If the topology has a single host.
    pub fn b(&self) -> &Host {
        self.host(1)
    }

    /// The switch namespace of a switched topology (holding bridge `br0`).
    pub fn switch(&self) -> Option<&Netns> {
        self.switch.as_ref().map(|s| &s.ns)
    }

    /// Name of the bridge in [`switch`](Topology::switch), if any.
    pub fn bridge(&self) -> Option<&str> {
        self.switch.as_ref().map(|_| BRIDGE)
    }

    /// Name (in the switch namespace) of the bridge port that host `i` is
    /// plugged into, if this is a switched topology with such a host.
    pub fn switch_port(&self, i: usize) -> Option<&str> {
        self.switch.as_ref()?.ports.get(i).map(String::as_str)
    }

    /// Every namespace of the topology: the hosts', then the switch's.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let hosts = self.hosts.iter().map(Host::ns);
        hosts.chain(self.switch()).collect()
    }

    /// The loss applied by the switch ([`Loss::NONE`] for a pair).
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// How many packets the switch has dropped so far, read from the counter
    /// of its nftables drop rules (0 without loss).
    pub fn drop_counter(&self) -> Result<u64, Error> {
        let Some(switch) = self.switch.as_ref().filter(|_| self.loss.fraction > 0.0) else {
            return Ok(0);
        };
        let mut nft = switch.ns.command("nft");
        nft.args(["list", "counter", "bridge", LOSS_TABLE, LOSS_COUNTER]);
        let ctx = format!(
            "reading the drop counter in network namespace {}",
            switch.ns.name()
        );
        let out = cmd::run(&mut nft, &ctx, None)?;
        let mut words = out.split_whitespace();
        while let Some(word) = words.next() {
            if word == "packets" {
                if let Some(n) = words.next().and_then(|n| n.parse().ok()) {
                    return Ok(n);
                }
            }
        }
        Err(Error::Invalid(format!(
            "{ctx}: no packet count in nft's output: {out}"
        )))
    }

    /// Pings `to` from `from` until it answers; see [`Host::wait_reachable`].
    pub fn wait_reachable(
        &self,
        from: &Host,
        to: impl Into<IpAddr>,
        timeout: Duration,
    ) -> Result<(), Error> {
        from.wait_reachable(to, timeout)
    }

    /// Waits until the first host reaches every other one (over IPv4, and
    /// IPv6 if configured).
    fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let Some((first, rest)) = self.hosts.split_first() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        for host in rest {
            let left = deadline.saturating_duration_since(Instant::now());
            first.wait_reachable(host.ipv4, left)?;
            if let Some(v6) = host.ipv6 {
                let left = deadline.saturating_duration_since(Instant::now());
                first.wait_reachable(v6, left)?;
            }
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Reverse order of creation: hosts last to first, then the switch.
        while let Some(host) = self.hosts.pop() {
            drop(host);
        }
        drop(self.switch.take());
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("hosts", &self.hosts)
            .field("switch", &self.switch().map(Netns::name))
            .field("loss", &self.loss)
            .finish()
    }
}

/// Names and addresses of one topology.
struct Names {
    pid: u32,
    n: u32,
    /// 0..512: selects a /24 in 198.18.0.0/15 and a /64 in 2001:2::/48.
    subnet: u16,
}

impl Names {
    /// Claims the next topology number, after removing dead processes' leftovers.
    fn next() -> Result<Names, Error> {
        cmd::require_root()?;
        remove_stale();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let subnet = (pid.wrapping_mul(97).wrapping_add(n) % 512) as u16;
        Ok(Names { pid, n, subnet })
    }

    fn ns(&self, role: &str) -> String {
        format!("{NAME_PREFIX}{}-{}-{role}", self.pid, self.n)
    }

    fn iface(&self, role: &str) -> Result<String, Error> {
        let name = format!("x{:05}{}{role}", self.pid % 100_000, self.n);
        if name.len() > IFNAME_MAX {
            return Err(Error::Invalid(format!(
                "interface name {name} is longer than Linux's limit of {IFNAME_MAX} characters \
                 (too many topologies or hosts in one process)"
            )));
        }
        Ok(name)
    }

    fn ipv4(&self, host: u8) -> Ipv4Addr {
        let [hi, lo] = self.subnet.to_be_bytes();
        Ipv4Addr::new(198, 18 + hi, lo, host)
    }

    fn ipv6(&self, host: u8) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 2, 0, self.subnet, 0, 0, 0, host.into())
    }

    /// Locally administered unicast MAC: 02:78:<n>:<host>:<side>.
    fn mac(&self, host: u8, side: u8) -> [u8; 6] {
        let [_, _, n_hi, n_lo] = self.n.to_be_bytes();
        [0x02, 0x78, n_hi, n_lo, host, side]
    }
}

fn mac_string(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_benchmarking_ranges() {
        let v4_net = u32::from(Ipv4Addr::new(198, 18, 0, 0));
        for subnet in 0..512 {
            let names = Names {
                pid: 4_194_303,
                n: 99_999,
                subnet,
            };
            for host in [1, 2, 254] {
                let v4 = u32::from(names.ipv4(host));
                assert_eq!(v4 & 0xfffe_0000, v4_net, "{}", names.ipv4(host));
                let v6 = names.ipv6(host).segments();
                assert_eq!(v6[..3], [0x2001, 2, 0], "{}", names.ipv6(host));
            }
            for role in ["a", "b", "h253", "s253"] {
                let name = names.iface(role).unwrap();
                assert!(name.len() <= IFNAME_MAX, "{name}");
            }
        }
    }

    #[test]
    fn too_long_interface_names_are_refused() {
        let names = Names {
            pid: 1,
            n: 1_000_000,
            subnet: 0,
        };
        assert!(names.iface("h253").is_err());
    }

    #[test]
    fn loss_rules_never_touch_arp() {
        let all = Loss::all(0.25).ruleset();
        assert!(all.contains("meta protocol ip numgen random mod 10000 < 2500"));
        assert!(all.contains("meta protocol ip6 numgen random mod 10000 < 2500"));
        assert!(!all.contains("arp"));
        let udp = Loss::udp_port(0.5, 4791).ruleset();
        assert!(udp.contains("meta protocol ip udp dport 4791 numgen random mod 10000 < 5000"));
        assert!(udp.contains("meta protocol ip6 udp dport 4791"));
        assert!(Loss::all(1.5).validate().is_err());
        assert!(Loss::all(f64::NAN).validate().is_err());
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        let names = Names {
            pid: 7,
            n: 0x1234,
            subnet: 0,
        };
        let mac = names.mac(3, 1);
        assert_eq!(mac, [0x02, 0x78, 0x12, 0x34, 3, 1]);
        assert_eq!(mac_string(mac), "02:78:12:34:03:01");
    }
}
