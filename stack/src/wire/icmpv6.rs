//! ICMPv6 (RFC 4443) and the Neighbor Discovery messages carried in it (RFC 4861): echo, the four errors,
//! router solicitation and advertisement, neighbour solicitation and advertisement, redirect, and the ND
//! options a host uses (link-layer addresses, prefix information, MTU).

use super::ipv6::{self, Addr};
use super::{Error, Mac, Result};

pub const DEST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAM_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
pub const REDIRECT: u8 = 137;

pub const UNREACH_NO_ROUTE: u8 = 0;
pub const UNREACH_PROHIBITED: u8 = 1;
pub const UNREACH_ADDRESS: u8 = 3;
pub const UNREACH_PORT: u8 = 4;

const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
const OPT_PREFIX: u8 = 3;
const OPT_MTU: u8 = 5;

pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// A Prefix Information option (RFC 4861 4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    pub prefix: Addr,
    pub len: u8,
    /// L: the prefix is on-link.
    pub on_link: bool,
    /// A: addresses may be formed from it (SLAAC).
    pub autonomous: bool,
    pub valid: u32,
    pub preferred: u32,
}

/// The ND options of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NdOptions {
    pub source_ll: Option<Mac>,
    pub target_ll: Option<Mac>,
    pub prefixes: Vec<PrefixInfo>,
    pub mtu: Option<u32>,
}

impl NdOptions {
    /// Parses options; an option of length 0 makes the whole message invalid (RFC 4861 4.6).
    pub fn parse(mut b: &[u8]) -> Result<NdOptions> {
        let mut o = NdOptions::default();
        while !b.is_empty() {
            if b.len() < 2 {
                return Err(Error::Truncated);
            }
            let len = usize::from(b[1]) * 8;
            if len == 0 {
                return Err(Error::Malformed);
            }
            let opt = b.get(..len).ok_or(Error::Truncated)?;
            match opt[0] {
                OPT_SOURCE_LL | OPT_TARGET_LL if len >= 8 => {
                    let mac: Mac = opt[2..8].try_into().map_err(|_| Error::Malformed)?;
                    if opt[0] == OPT_SOURCE_LL {
                        o.source_ll = Some(mac);
                    } else {
                        o.target_ll = Some(mac);
                    }
                }
                OPT_PREFIX if len == 32 => {
                    let mut prefix = [0u8; 16];
                    prefix.copy_from_slice(&opt[16..32]);
                    o.prefixes.push(PrefixInfo {
                        prefix,
                        len: opt[2],
                        on_link: opt[3] & 0x80 != 0,
                        autonomous: opt[3] & 0x40 != 0,
                        valid: u32::from_be_bytes([opt[4], opt[5], opt[6], opt[7]]),
                        preferred: u32::from_be_bytes([opt[8], opt[9], opt[10], opt[11]]),
                    });
                }
                OPT_MTU if len == 8 => o.mtu = Some(u32::from_be_bytes([opt[4], opt[5], opt[6], opt[7]])),
                _ => {} // unknown options are skipped
            }
            b = &b[len..];
        }
        Ok(o)
    }

    fn emit_ll(kind: u8, mac: Mac, out: &mut Vec<u8>) {
        out.extend_from_slice(&[kind, 1]);
        out.extend_from_slice(&mac);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr<'a> {
    EchoRequest {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// An error: type, code, the 32-bit field (MTU for Packet Too Big, pointer for Parameter Problem) and
    /// as much of the offending packet as fits.
    Error {
        kind: u8,
        code: u8,
        param: u32,
        original: &'a [u8],
    },
    RouterSolicit {
        source_ll: Option<Mac>,
    },
    RouterAdvert {
        hop_limit: u8,
        lifetime: u16,
        reachable_ms: u32,
        retrans_ms: u32,
        options: NdOptions,
    },
    NeighborSolicit {
        target: Addr,
        source_ll: Option<Mac>,
    },
    NeighborAdvert {
        flags: u8,
        target: Addr,
        target_ll: Option<Mac>,
    },
    Redirect {
        target: Addr,
        dest: Addr,
        target_ll: Option<Mac>,
    },
    Other {
        kind: u8,
        code: u8,
    },
}

fn addr_at(b: &[u8], at: usize) -> Result<Addr> {
    b.get(at..at + 16).and_then(|s| s.try_into().ok()).ok_or(Error::Truncated)
}

impl<'a> Repr<'a> {
    /// Parses and checks the checksum against the pseudo-header of `src` and `dst`.
    pub fn parse(src: &Addr, dst: &Addr, b: &'a [u8]) -> Result<Repr<'a>> {
        if b.len() < 8 {
            return Err(Error::Truncated);
        }
        if !ipv6::l4_checksum_ok(src, dst, ipv6::NH_ICMPV6, b) {
            return Err(Error::Checksum);
        }
        let (kind, code) = (b[0], b[1]);
        let w = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let (ident, seq) = ((w >> 16) as u16, w as u16);
        Ok(match kind {
            ECHO_REQUEST => Repr::EchoRequest { ident, seq, data: &b[8..] },
            ECHO_REPLY => Repr::EchoReply { ident, seq, data: &b[8..] },
            DEST_UNREACHABLE | PACKET_TOO_BIG | TIME_EXCEEDED | PARAM_PROBLEM => Repr::Error { kind, code, param: w, original: &b[8..] },
            ROUTER_SOLICIT => Repr::RouterSolicit { source_ll: NdOptions::parse(&b[8..])?.source_ll },
            ROUTER_ADVERT => {
                if b.len() < 16 {
                    return Err(Error::Truncated);
                }
                Repr::RouterAdvert {
                    hop_limit: b[4],
                    lifetime: u16::from_be_bytes([b[6], b[7]]),
                    reachable_ms: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                    retrans_ms: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
                    options: NdOptions::parse(&b[16..])?,
                }
            }
            NEIGHBOR_SOLICIT => Repr::NeighborSolicit {
                target: addr_at(b, 8)?,
                source_ll: NdOptions::parse(b.get(24..).ok_or(Error::Truncated)?)?.source_ll,
            },
            NEIGHBOR_ADVERT => Repr::NeighborAdvert {
                flags: b[4],
                target: addr_at(b, 8)?,
                target_ll: NdOptions::parse(b.get(24..).ok_or(Error::Truncated)?)?.target_ll,
            },
            REDIRECT => Repr::Redirect {
                target: addr_at(b, 8)?,
                dest: addr_at(b, 24)?,
                target_ll: NdOptions::parse(b.get(40..).ok_or(Error::Truncated)?)?.target_ll,
            },
            _ => Repr::Other { kind, code },
        })
    }

    /// The message with its checksum for `src` -> `dst`.
    pub fn emit(&self, src: &Addr, dst: &Addr) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        match self {
            Repr::EchoRequest { ident, seq, data } | Repr::EchoReply { ident, seq, data } => {
                b[0] = if matches!(self, Repr::EchoRequest { .. }) { ECHO_REQUEST } else { ECHO_REPLY };
                b[4..6].copy_from_slice(&ident.to_be_bytes());
                b[6..8].copy_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(data);
            }
            Repr::Error { kind, code, param, original } => {
                b[0] = *kind;
                b[1] = *code;
                b[4..8].copy_from_slice(&param.to_be_bytes());
                b.extend_from_slice(original);
            }
            Repr::RouterSolicit { source_ll } => {
                b[0] = ROUTER_SOLICIT;
                if let Some(m) = source_ll {
                    NdOptions::emit_ll(OPT_SOURCE_LL, *m, &mut b);
                }
            }
            Repr::RouterAdvert { hop_limit, lifetime, reachable_ms, retrans_ms, options } => {
                b[0] = ROUTER_ADVERT;
                b[4] = *hop_limit;
                b[6..8].copy_from_slice(&lifetime.to_be_bytes());
                b.extend_from_slice(&reachable_ms.to_be_bytes());
                b.extend_from_slice(&retrans_ms.to_be_bytes());
                if let Some(m) = options.source_ll {
                    NdOptions::emit_ll(OPT_SOURCE_LL, m, &mut b);
                }
                if let Some(mtu) = options.mtu {
                    b.extend_from_slice(&[OPT_MTU, 1, 0, 0]);
                    b.extend_from_slice(&mtu.to_be_bytes());
                }
                for p in &options.prefixes {
                    b.extend_from_slice(&[OPT_PREFIX, 4, p.len, (u8::from(p.on_link) << 7) | (u8::from(p.autonomous) << 6)]);
                    b.extend_from_slice(&p.valid.to_be_bytes());
                    b.extend_from_slice(&p.preferred.to_be_bytes());
                    b.extend_from_slice(&[0; 4]);
                    b.extend_from_slice(&p.prefix);
                }
            }
            Repr::NeighborSolicit { target, source_ll } => {
                b[0] = NEIGHBOR_SOLICIT;
                b.extend_from_slice(target);
                if let Some(m) = source_ll {
                    NdOptions::emit_ll(OPT_SOURCE_LL, *m, &mut b);
                }
            }
            Repr::NeighborAdvert { flags, target, target_ll } => {
                b[0] = NEIGHBOR_ADVERT;
                b[4] = *flags;
                b.extend_from_slice(target);
                if let Some(m) = target_ll {
                    NdOptions::emit_ll(OPT_TARGET_LL, *m, &mut b);
                }
            }
            Repr::Redirect { target, dest, target_ll } => {
                b[0] = REDIRECT;
                b.extend_from_slice(target);
                b.extend_from_slice(dest);
                if let Some(m) = target_ll {
                    NdOptions::emit_ll(OPT_TARGET_LL, *m, &mut b);
                }
            }
            Repr::Other { kind, code } => {
                b[0] = *kind;
                b[1] = *code;
            }
        }
        let c = ipv6::l4_checksum(src, dst, ipv6::NH_ICMPV6, &b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const A: Addr = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56];

    #[test]
    fn every_message_round_trips() {
        let pi = PrefixInfo {
            prefix: [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            len: 64,
            on_link: true,
            autonomous: true,
            valid: 86400,
            preferred: 14400,
        };
        let msgs = [
            Repr::EchoRequest { ident: 7, seq: 9, data: b"abc" },
            Repr::EchoReply { ident: 7, seq: 9, data: b"" },
            Repr::Error { kind: PACKET_TOO_BIG, code: 0, param: 1280, original: &[0x60, 0, 0, 0] },
            Repr::RouterSolicit { source_ll: Some([2; 6]) },
            Repr::RouterAdvert {
                hop_limit: 64,
                lifetime: 1800,
                reachable_ms: 0,
                retrans_ms: 0,
                options: NdOptions { source_ll: Some([4; 6]), target_ll: None, prefixes: vec![pi], mtu: Some(1400) },
            },
            Repr::NeighborSolicit { target: A, source_ll: None },
            Repr::NeighborAdvert { flags: NA_SOLICITED | NA_OVERRIDE, target: A, target_ll: Some([6; 6]) },
            Repr::Redirect { target: A, dest: ipv6::ALL_NODES, target_ll: None },
        ];
        for m in msgs {
            let b = m.emit(&A, &ipv6::ALL_NODES);
            assert_eq!(Repr::parse(&A, &ipv6::ALL_NODES, &b), Ok(m.clone()), "{m:?}");
            assert_eq!(Repr::parse(&A, &ipv6::ALL_ROUTERS, &b), Err(Error::Checksum), "checksum covers the pseudo-header");
        }
    }

    #[test]
    fn hostile_options_are_errors() {
        assert_eq!(NdOptions::parse(&[1, 0, 0, 0, 0, 0, 0, 0]), Err(Error::Malformed), "zero length");
        assert_eq!(NdOptions::parse(&[1, 2, 0, 0]), Err(Error::Truncated));
        assert_eq!(NdOptions::parse(&[1]), Err(Error::Truncated));
        // An unknown option is skipped; a short prefix option is ignored.
        assert_eq!(NdOptions::parse(&[200, 1, 0, 0, 0, 0, 0, 0, 3, 1, 64, 0xc0, 0, 0, 0, 0]), Ok(NdOptions::default()));
    }
}
