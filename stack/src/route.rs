//! The routing table: longest-prefix match, with an optional gateway per route.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dest: [u8; 4],
    pub prefix: u8,
    pub gateway: Option<[u8; 4]>,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    }
}

impl Route {
    pub fn matches(&self, ip: [u8; 4]) -> bool {
        let m = mask(self.prefix);
        u32::from_be_bytes(ip) & m == u32::from_be_bytes(self.dest) & m
    }
}

#[derive(Debug, Default, Clone)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    pub fn add(&mut self, r: Route) {
        self.routes.retain(|x| !(x.dest == r.dest && x.prefix == r.prefix));
        self.routes.push(r);
    }
    /// Whether the table has a route for exactly `dest`/`prefix`.
    pub fn contains(&self, dest: [u8; 4], prefix: u8) -> bool {
        self.routes.iter().any(|x| x.dest == dest && x.prefix == prefix)
    }
    /// The most specific route for `ip`.
    pub fn lookup(&self, ip: [u8; 4]) -> Option<Route> {
        self.routes.iter().filter(|r| r.matches(ip)).max_by_key(|r| r.prefix).copied()
    }
    /// The next hop for `ip`: the gateway, or `ip` itself on a connected route.
    pub fn next_hop(&self, ip: [u8; 4]) -> Option<[u8; 4]> {
        self.lookup(ip).map(|r| r.gateway.unwrap_or(ip))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut t = Routes::default();
        t.add(Route { dest: [0, 0, 0, 0], prefix: 0, gateway: Some([10, 0, 0, 1]) });
        t.add(Route { dest: [10, 0, 0, 0], prefix: 24, gateway: None });
        t.add(Route { dest: [10, 0, 0, 128], prefix: 25, gateway: Some([10, 0, 0, 2]) });
        assert_eq!(t.next_hop([10, 0, 0, 5]), Some([10, 0, 0, 5]));
        assert_eq!(t.next_hop([10, 0, 0, 200]), Some([10, 0, 0, 2]));
        assert_eq!(t.next_hop([8, 8, 8, 8]), Some([10, 0, 0, 1]));
        let mut empty = Routes::default();
        assert_eq!(empty.next_hop([1, 2, 3, 4]), None);
        empty.add(Route { dest: [192, 168, 1, 0], prefix: 24, gateway: None });
        assert_eq!(empty.next_hop([192, 168, 2, 1]), None);
    }
}
