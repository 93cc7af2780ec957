//! `nic-lab run TOPOLOGY-FILE`: builds devices (TAP devices and cards), VLAN sub-interfaces, bridges and
//! hosts (a stack instance of its own on one interface: an isolated namespace with its addresses,
//! routes, neighbours and sockets) from a TOML file, runs them all from one poll loop that sleeps when
//! nothing moves, and at SIGINT, SIGTERM or after `--seconds` prints what each did.
//!
//! ```toml
//! [[device]]              # a TAP device (created if missing) or a card over vfio-user
//! name = "a"
//! tap = "ta"              # or: vfio-user = "/run/nic0.sock"
//!
//! [[veth]]                # two interfaces joined back to back in this process (between hosts,
//! a = "v1"                # which are namespaces of their own)
//! b = "v2"
//!
//! [[vlan]]                # an 802.1Q sub-interface of a device
//! name = "a100"
//! parent = "a"
//! id = 100
//! offload = true          # optional, per VLAN: the tag in the card's descriptors (default: when the card can)
//!
//! [[bond]]                # a bond over devices and VLANs
//! name = "bond0"
//! mode = "active-backup"  # or balance-xor
//! slaves = ["a", "b"]
//!
//! [[bridge]]              # a learning bridge over devices, VLANs and bonds
//! name = "br0"
//! ports = ["a", "b"]
//! ageing = 300            # optional, seconds
//!
//! [[host]]                # a stack on a device, VLAN or bridge
//! name = "h1"
//! interface = "br0"
//! ip = "10.0.0.3/24"
//! gw = "10.0.0.1"         # optional
//! ip6 = ["2001:db8::3/64"] # optional; IPv6 is on with any of ip6, ipv6 = true, gw6
//! netfilter = "h1.nft"  # optional: this host's rules (else `--netfilter`'s, for every host)
//! qdisc = "tbf rate 20mbit burst 16k latency 50ms"  # optional: the egress qdisc (else `--qdisc`'s)
//! services = ["tcp-echo:7", "udp-echo:7", "tcp-discard:9"]  # optional: what the host answers (RFC 862/863)
//!
//! [[router]]              # forwarding between hosts' interfaces (IPv4 and IPv6)
//! name = "r"
//! hosts = ["h1"]
//! netfilter = "nat.nft"   # optional: rules (nft syntax, relative to this file), conntrack and NAT
//! forward = false         # optional: one host over these interfaces that does not forward (default true)
//!
//! [[route]]               # a route of a router, beside the connected ones
//! router = "r"
//! dest = "10.99.0.0/16"
//! via = "10.0.0.9"
//! host = "h1"             # the interface, by its host
//! metric = 10             # optional
//! ```
//!
//! Names are resolved in that order (devices and veth pairs, VLANs, bonds, bridges, hosts); each interface
//! is used once.

use serde::Deserialize;
use stack::dev::bridge::Bridge;
use stack::dev::vlan::{VlanDev, VlanMux};
use stack::dev::Device;
use stack::time::Instant;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    device: Vec<DeviceSpec>,
    #[serde(default)]
    veth: Vec<VethSpec>,
    #[serde(default)]
    vlan: Vec<VlanSpec>,
    #[serde(default)]
    bond: Vec<BondSpec>,
    #[serde(default)]
    bridge: Vec<BridgeSpec>,
    #[serde(default)]
    host: Vec<HostSpec>,
    #[serde(default)]
    router: Vec<RouterSpec>,
    #[serde(default)]
    route: Vec<RouteSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterSpec {
    name: String,
    hosts: Vec<String>,
    netfilter: Option<String>,
    #[serde(default = "yes")]
    forward: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    router: String,
    dest: String,
    via: Option<String>,
    host: String,
    #[serde(default)]
    metric: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSpec {
    name: String,
    tap: Option<String>,
    #[serde(rename = "vfio-user")]
    vfio_user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VethSpec {
    a: String,
    b: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VlanSpec {
    name: String,
    parent: String,
    id: u16,
    offload: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BondSpec {
    name: String,
    mode: String,
    slaves: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgeSpec {
    name: String,
    ports: Vec<String>,
    ageing: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    name: String,
    interface: String,
    ip: String,
    gw: Option<String>,
    #[serde(default)]
    ip6: Vec<String>,
    #[serde(default)]
    ipv6: bool,
    gw6: Option<String>,
    netfilter: Option<String>,
    qdisc: Option<String>,
    #[serde(default)]
    services: Vec<String>,
}

/// A device several owners look at: a bridge both forwards (the loop polls it) and reports.
struct SharedDev<D: Device>(Rc<RefCell<D>>);

impl<D: Device> Device for SharedDev<D> {
    fn mac(&self) -> stack::wire::Mac {
        self.0.borrow().mac()
    }
    fn mtu(&self) -> usize {
        self.0.borrow().mtu()
    }
    fn features(&self) -> stack::dev::Features {
        self.0.borrow().features()
    }
    fn transmit(&mut self, q: &mut std::collections::VecDeque<stack::skb::PacketBuf>) -> std::io::Result<usize> {
        self.0.borrow_mut().transmit(q)
    }
    fn poll(&mut self, budget: usize, out: &mut Vec<stack::skb::PacketBuf>) -> std::io::Result<usize> {
        self.0.borrow_mut().poll(budget, out)
    }
    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.0.borrow_mut().wait(timeout)
    }
    fn name(&self) -> String {
        self.0.borrow().name()
    }
    fn join_multicast(&mut self, mac: stack::wire::Mac) -> std::io::Result<()> {
        self.0.borrow_mut().join_multicast(mac)
    }
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.0.borrow().raw_fd()
    }
    fn wait_fds(&mut self, out: &mut Vec<std::os::fd::RawFd>) -> std::io::Result<bool> {
        self.0.borrow_mut().wait_fds(out)
    }
    fn woke(&mut self, ready: &[bool]) -> std::io::Result<()> {
        self.0.borrow_mut().woke(ready)
    }
    fn join_vlan(&mut self, vid: u16) -> std::io::Result<()> {
        self.0.borrow_mut().join_vlan(vid)
    }
}

/// What was built: hosts and routers to poll, bridges nobody polls through a host, and what to report.
struct Built {
    hosts: Vec<(String, stack::Stack)>,
    /// Each host's services (`services =`), in the order of `hosts`.
    services: Vec<Vec<crate::services::Service>>,
    routers: Vec<(String, stack::router::Router)>,
    /// The host names of each router's interfaces, in order.
    router_hosts: Vec<Vec<String>>,
    /// Each router's services: those of its interfaces' hosts, on the one socket table they share.
    router_services: Vec<Vec<crate::services::Service>>,
    bridges: Vec<(Rc<RefCell<Bridge>>, bool)>,
    vlans: Vec<(String, Rc<RefCell<VlanMux>>)>,
    /// Hosts with a qdisc of their own (`qdisc =` or `--qdisc`), whose statistics the report shows.
    shaped: Vec<String>,
}

fn build(t: Topology, dir: &std::path::Path, o: &crate::Opts) -> Result<Built, String> {
    let mut ifaces: HashMap<String, Box<dyn Device>> = HashMap::new();
    let taken = |ifaces: &mut HashMap<String, Box<dyn Device>>, name: &str, by: &str| {
        ifaces.remove(name).ok_or(format!("{by}: no interface '{name}' (or it is used twice)"))
    };
    for (i, d) in t.device.iter().enumerate() {
        let dev: Box<dyn Device> = match (&d.tap, &d.vfio_user) {
            (Some(tap), None) => {
                let pid = std::process::id();
                let mac = [0x02, 0x4e, 0x49, (i as u8).wrapping_add(1), (pid >> 8) as u8, pid as u8];
                Box::new(stack::dev::tap::Tap::open(tap, mac).map_err(|e| format!("device {}: tap {tap}: {e}", d.name))?)
            }
            (None, Some(sock)) => {
                let tr = driver::open_transport(&format!("vfio-user:{sock}")).map_err(|e| format!("device {}: {e}", d.name))?;
                let dev = driver::E1000e::open(tr, o.config()).map_err(|e| format!("device {}: {e}", d.name))?;
                Box::new(stack::dev::nic::NicDevice::new(dev))
            }
            _ => return Err(format!("device {}: give exactly one of tap and vfio-user", d.name)),
        };
        eprintln!("[run] device {} ({})", d.name, dev.name());
        ifaces.insert(d.name.clone(), dev);
    }
    for (i, v) in t.veth.iter().enumerate() {
        let pid = std::process::id();
        let mac = |side: u8| [0x02, 0x56, side, i as u8, (pid >> 8) as u8, pid as u8];
        let (a, b) = stack::dev::veth::pair((&v.a, mac(0xa)), (&v.b, mac(0xb))).map_err(|e| format!("veth {}/{}: {e}", v.a, v.b))?;
        eprintln!("[run] veth {} <-> {}", v.a, v.b);
        ifaces.insert(v.a.clone(), Box::new(a));
        ifaces.insert(v.b.clone(), Box::new(b));
    }
    let mut vlans = Vec::new();
    let mut muxes: HashMap<String, Rc<RefCell<VlanMux>>> = HashMap::new();
    for v in &t.vlan {
        let mux = match muxes.get(&v.parent) {
            Some(m) => m.clone(),
            None => {
                let parent = taken(&mut ifaces, &v.parent, &format!("vlan {}", v.name))?;
                let m = VlanMux::new(parent, None).map_err(|e| format!("vlan {}: {e}", v.name))?;
                muxes.insert(v.parent.clone(), m.clone());
                vlans.push((v.parent.clone(), m.clone()));
                m
            }
        };
        let dev: VlanDev = VlanMux::vlan(&mux, v.id).and_then(|d| d.offload(v.offload)).map_err(|e| format!("vlan {}: {e}", v.name))?;
        eprintln!("[run] vlan {} ({})", v.name, dev.name());
        ifaces.insert(v.name.clone(), Box::new(dev));
    }
    // A VLAN parent's untagged traffic stays reachable under the parent's name.
    for (parent, m) in &muxes {
        ifaces.insert(parent.clone(), Box::new(VlanMux::untagged(m)));
    }
    for b in &t.bond {
        let mode: stack::dev::bond::Mode = b.mode.parse().map_err(|e| format!("bond {}: {e}", b.name))?;
        let mut slaves = Vec::new();
        for sl in &b.slaves {
            slaves.push(taken(&mut ifaces, sl, &format!("bond {}", b.name))?);
        }
        eprintln!("[run] bond {} ({}) over {}", b.name, b.mode, b.slaves.join(", "));
        ifaces.insert(b.name.clone(), Box::new(stack::dev::bond::Bond::new(&b.name, mode, slaves)));
    }
    let mut bridges = Vec::new();
    for (i, b) in t.bridge.iter().enumerate() {
        let mut members = Vec::new();
        for p in &b.ports {
            members.push(taken(&mut ifaces, p, &format!("bridge {}", b.name))?);
        }
        let pid = std::process::id();
        let mut br = Bridge::new(&b.name, [0x02, 0x42, 0x52, (i as u8).wrapping_add(1), (pid >> 8) as u8, pid as u8], members);
        if let Some(a) = b.ageing {
            br.ageing = Duration::from_secs(a);
        }
        eprintln!("[run] bridge {} over {}", b.name, b.ports.join(", "));
        let shared = Rc::new(RefCell::new(br));
        bridges.push((shared.clone(), false));
        ifaces.insert(b.name.clone(), Box::new(SharedDev(shared)));
    }
    let mut hosts = Vec::new();
    let mut specs = Vec::new();
    let mut shaped = Vec::new();
    for h in &t.host {
        let dev = taken(&mut ifaces, &h.interface, &format!("host {}", h.name))?;
        if let Some(b) = bridges.iter_mut().find(|b| b.0.borrow().name() == h.interface) {
            b.1 = true;
        }
        let opts = crate::Opts {
            ip: Some(h.ip.clone()),
            ip_more: Vec::new(),
            gw: h.gw.clone(),
            ip6: h.ip6.clone(),
            ipv6: h.ipv6 || !h.ip6.is_empty() || h.gw6.is_some(),
            gw6: h.gw6.clone(),
            vlan: None,
            impair: None,
            // The host's own rules, else the command line's.
            netfilter: h.netfilter.as_ref().map(|f| dir.join(f).display().to_string()).or_else(|| o.netfilter.clone()),
            qdisc: h.qdisc.clone().or_else(|| o.qdisc.clone()),
            ..o.clone()
        };
        if opts.qdisc.is_some() {
            shaped.push(h.name.clone());
        }
        let mut s = crate::ping::stack_on(dev, &opts).map_err(|e| format!("host {}: {e}", h.name))?;
        s.set_name(&h.interface);
        let list = if h.services.is_empty() { String::new() } else { format!(", serving {}", h.services.join(" ")) };
        eprintln!("[run] host {} on {} ({}){list}", h.name, h.interface, h.ip);
        hosts.push((h.name.clone(), s));
        // Started once it is known whose socket table they live in (a router's interfaces share one).
        specs.push(h.services.iter().map(|x| (h.name.clone(), x.clone())).collect::<Vec<_>>());
    }
    for name in ifaces.keys() {
        if !muxes.contains_key(name) {
            log::warn!("interface {name} is not used by a bridge or a host");
        }
    }
    let mut routers = Vec::new();
    let mut router_hosts = Vec::new();
    let mut router_services = Vec::new();
    for r in &t.router {
        let mut stacks = Vec::new();
        let mut names = Vec::new();
        let mut their_specs = Vec::new();
        for h in &r.hosts {
            let i = hosts.iter().position(|x| &x.0 == h).ok_or(format!("router {}: no host '{h}' (or it is used twice)", r.name))?;
            let (n, s) = hosts.remove(i);
            names.push(n);
            stacks.push(s);
            their_specs.extend(specs.remove(i));
        }
        let mut router = if r.forward { stack::router::Router::new(stacks) } else { stack::router::Router::host(stacks) };
        for rt in t.route.iter().filter(|x| x.router == r.name) {
            let (dest, prefix) = rt.dest.split_once('/').ok_or(format!("route {}: expected ADDR/PREFIX", rt.dest))?;
            let dest: std::net::IpAddr = dest.parse().map_err(|e| format!("route {}: {e}", rt.dest))?;
            let prefix: u8 = prefix.parse().map_err(|e| format!("route {}: {e}", rt.dest))?;
            let via = rt.via.as_deref().map(str::parse).transpose().map_err(|e| format!("route {}: via: {e}", rt.dest))?;
            let iface = names
                .iter()
                .position(|n| *n == rt.host)
                .ok_or(format!("route {}: host {} is not on router {}", rt.dest, rt.host, r.name))?;
            router.add_route(stack::router::Route { dest, prefix, via, iface, metric: rt.metric });
        }
        if let Some(f) = &r.netfilter {
            let path = dir.join(f);
            let nf = stack::netfilter::Netfilter::from_file(&path).map_err(|e| format!("router {}: {e}", r.name))?;
            eprintln!("[run] router {}: netfilter rules from {} ({} chains)", r.name, path.display(), nf.rules.chains.len());
            router.set_netfilter(nf);
        }
        eprintln!("[run] router {} over {}", r.name, names.join(", "));
        let mut theirs = Vec::new();
        for (host, spec) in &their_specs {
            let sv = router.sockets(|s| crate::services::Service::start(s, spec)).map_err(|e| format!("host {host}: {}", e.0))?;
            theirs.push(sv.map_err(|e| format!("host {host}: {e}"))?);
        }
        routers.push((r.name.clone(), router));
        router_hosts.push(names);
        router_services.push(theirs);
    }
    let mut services = Vec::new();
    for ((name, s), specs) in hosts.iter_mut().zip(specs) {
        let mut mine = Vec::new();
        for (_, spec) in &specs {
            mine.push(crate::services::Service::start(s, spec).map_err(|e| format!("host {name}: {e}"))?);
        }
        services.push(mine);
    }
    Ok(Built { hosts, services, routers, router_hosts, router_services, bridges, vlans, shaped })
}

pub fn run(o: &crate::Opts) -> Result<bool, String> {
    let path = o.dest.as_deref().ok_or("run needs a topology file")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let topo: Topology = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let dir = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new("."));
    let mut b = build(topo, dir, o)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let end = o.seconds.map(|s| std::time::Instant::now() + Duration::from_secs_f64(s));
    eprintln!("[run] running{}", o.seconds.map(|s| format!(" for {s} s")).unwrap_or_else(|| " until SIGINT".into()));
    let mut discard = Vec::new();
    let mut service_buf = vec![0u8; 64 * 1024];
    let mut ctl = o.control.as_deref().map(|p| crate::control::Control::bind(std::path::Path::new(p))).transpose()?;
    while !stop.load(Ordering::Relaxed) && end.is_none_or(|e| std::time::Instant::now() < e) {
        let now = Instant::now();
        if let Some(c) = ctl.as_mut() {
            // Hosts by name, routers' interfaces by their host's name or interface name.
            let mut stacks: Vec<(&str, &mut stack::Stack)> = Vec::new();
            for (n, s) in b.hosts.iter_mut() {
                stacks.push((n.as_str(), s));
            }
            for (r, names) in b.routers.iter_mut().zip(b.router_hosts.iter()) {
                for (s, n) in r.1.ifaces.iter_mut().zip(names.iter()) {
                    stacks.push((n.as_str(), s));
                }
            }
            c.serve_with(&mut |cmd| crate::control::command_among(cmd, &mut stacks));
        }
        let mut moved = false;
        for ((_, s), services) in b.hosts.iter_mut().zip(b.services.iter_mut()) {
            moved |= s.poll(now);
            for sv in services.iter_mut() {
                moved |= sv.turn(s, now, &mut service_buf);
            }
        }
        for ((_, r), services) in b.routers.iter_mut().zip(b.router_services.iter_mut()) {
            moved |= r.poll(now);
            for sv in services.iter_mut() {
                moved |= r.sockets(|s| sv.turn(s, now, &mut service_buf)).unwrap_or(false);
            }
        }
        // A bridge without a host on it forwards all the same.
        for (br, hosted) in &b.bridges {
            if !hosted {
                discard.clear();
                moved |= br.borrow_mut().poll(64, &mut discard).unwrap_or(0) > 0;
            }
        }
        if !moved {
            let next = b.hosts.iter().filter_map(|h| h.1.poll_at()).chain(b.routers.iter().filter_map(|r| r.1.poll_at())).min();
            let wait = next
                .map(|t| if t > now { t - now } else { Duration::ZERO })
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            // One sleep on every device's descriptors (a card's interrupt eventfds, re-armed first, offered
            // once however many VLANs it carries); a device with none to offer (a card that busy polls) is
            // polled again after 1 ms.
            let mut unhosted: Vec<_> = b.bridges.iter().filter(|x| !x.1).map(|x| x.0.borrow_mut()).collect();
            let mut devs: Vec<&mut dyn stack::dev::Device> =
                b.hosts.iter_mut().map(|h| h.1.dev.as_mut() as &mut dyn stack::dev::Device).collect();
            devs.extend(b.routers.iter_mut().flat_map(|r| r.1.ifaces.iter_mut().map(|s| s.dev.as_mut() as &mut dyn stack::dev::Device)));
            devs.extend(unhosted.iter_mut().map(|br| &mut **br as &mut dyn stack::dev::Device));
            if let Err(e) = stack::dev::wait_devices(&mut devs, wait) {
                log::warn!("waiting on the devices: {e}");
                std::thread::sleep(wait.min(Duration::from_millis(1)));
            }
        }
    }
    print!("{}", report(&b));
    Ok(true)
}

fn report(b: &Built) -> String {
    let mut s = String::new();
    for (br, _) in &b.bridges {
        s += &br.borrow().report();
    }
    for (parent, m) in &b.vlans {
        let (per, unknown) = m.borrow().stats();
        s += &format!("vlans on {parent}: {unknown} frames for VLANs not joined\n");
        for (vid, st) in per {
            let vid = vid.map(|v| v.to_string()).unwrap_or_else(|| "untagged".into());
            s += &format!("  vlan {vid}: rx {} tx {} dropped {}\n", st.rx_frames, st.tx_frames, st.rx_dropped);
        }
        if let Some(r) = m.borrow().parent_report() {
            for l in r.lines() {
                s += &format!("  {l}\n");
            }
        }
    }
    for (((name, r), names), services) in b.routers.iter().zip(&b.router_hosts).zip(&b.router_services) {
        s += &r.report(name);
        for sv in services {
            s += &format!("  service {}\n", sv.report());
        }
        for (st, host) in r.ifaces.iter().zip(names) {
            s += &format!("  {}", counters(host, st));
            if b.shaped.contains(host) {
                s += &format!("  host {host}: {}\n", st.tc_show().replace('\n', "\n    "));
            }
        }
    }
    for ((name, st), services) in b.hosts.iter().zip(&b.services) {
        s += &counters(name, st);
        if let Some(r) = st.dev.report() {
            for l in r.lines() {
                s += &format!("  {l}\n");
            }
        }
        for sv in services {
            s += &format!("  service {}\n", sv.report());
        }
        for (a, p, state) in st.ipv6_addrs() {
            s += &format!("  inet6 {}/{p} {state}\n", std::net::Ipv6Addr::from(a));
        }
        if let Some(nf) = st.netfilter() {
            for l in nf.borrow().rules.listing().lines() {
                s += &format!("  {l}\n");
            }
        }
        if b.shaped.contains(name) {
            s += &format!("  {}\n", st.tc_show().replace('\n', "\n  "));
        }
    }
    s
}

/// An interface's counters, as a host's report line: the link's frames and bytes, then IP and ARP.
fn counters(name: &str, st: &stack::Stack) -> String {
    let x = &st.stats;
    format!(
        "host {name} on {}: rx {} frames {} bytes ({} merged by gro), tx {} frames {} bytes, ip in {} delivered {} out {}, arp requests {} replies {}, no ports {}\n",
        st.dev.name(),
        x.rx_packets,
        x.rx_bytes,
        x.gro_merged,
        x.tx_packets,
        x.tx_bytes,
        x.in_receives,
        x.in_delivers,
        x.out_requests,
        x.arp_requests,
        x.arp_replies,
        x.no_ports
    )
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_mistakes_are_named() {
        let doc: String = include_str!("topology.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start().to_string() + "\n")
            .collect();
        let t: Topology = toml::from_str(&doc).unwrap();
        assert_eq!((t.device.len(), t.vlan.len(), t.bond.len(), t.bridge.len(), t.host.len()), (1, 1, 1, 1, 1));
        assert_eq!((t.router.len(), t.route.len(), t.veth.len()), (1, 1, 1));
        let e = toml::from_str::<Topology>("[[device]]\nname = \"a\"\ntapp = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("tapp"), "{e}");
        let e = toml::from_str::<Topology>("[[host]]\nname = \"h\"\n").unwrap_err().to_string();
        assert!(e.contains("interface"), "{e}");
    }

    #[test]
    fn the_example_topologies_parse() {
        for (name, text) in [
            ("bridge", include_str!("../topologies/bridge.toml")),
            ("vlans", include_str!("../topologies/vlans.toml")),
            ("bond", include_str!("../topologies/bond.toml")),
            ("router", include_str!("../topologies/router.toml")),
            ("namespaces", include_str!("../topologies/namespaces.toml")),
            ("multihomed", include_str!("../topologies/multihomed.toml")),
        ] {
            let t: Topology = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!t.host.is_empty(), "{name}");
        }
    }
}
