//! `tern-proxy`: the PROXY protocol header (HAProxy's, versions 1 and 2)
//! that a load balancer sends before its client's first byte, read
//! incrementally, with bounds, and without I/O.
//!
//! `tern-listen` reads a header only from a balancer whose rule carries
//! the `PROXY` variable (tern-listen(8), "PROXY PROTOCOL"). It peeks at
//! what waits on the socket, hands those bytes to [`Reader::feed`], and
//! consumes exactly the `take` bytes that it answers: never a byte past
//! the header, so the client's own first bytes stay on the socket for the
//! program. The framing (which bytes can still belong to the header) is
//! the few lines here; what the header says is parsed by the maintained
//! [`ppp`] crate, once the whole header is in (its partial-input answers
//! for version 1 are not reliable: `PROXY TCP4 1.2.3.` is a complete
//! error to it, though more bytes would make it valid).
//!
//! * Version 1: `PROXY TCP4|TCP6|UNKNOWN ...\r\n`, at most [`MAX_V1`]
//!   bytes (the protocol's own limit). The header ends at the first LF.
//! * Version 2: the 12-byte signature, version/command, family/protocol,
//!   a 16-bit length, then that many bytes of addresses and TLVs; at most
//!   [`MAX_V2`] bytes in all here (the protocol allows 65551: no balancer
//!   sends nearly that much, and a pending header is held in memory).
//!   TLVs are checked for structure and otherwise ignored.
//!
//! What a header can mean ([`Addresses`]): a proxied client (v1 `TCP4`,
//! `TCP6`; v2 `PROXY` over TCP/IPv4 or TCP/IPv6), the balancer's own
//! connection (v2 `LOCAL`, its health checks), or no usable address (v1
//! `UNKNOWN`; v2 `PROXY` with the UNSPEC or UNIX family). The caller uses
//! the real connection's addresses for the last two, as the protocol
//! says. A v2 header for a datagram protocol (UDP, UNIX datagrams) on
//! this stream is refused, as are the family/protocol bytes the protocol
//! says receivers must reject.
//!
//! Errors ([`Error`]) are static hints: never the received bytes.
//!
//! Caller: `bin/tern-listen` (untrusted input from a trusted balancer:
//! fuzzed, target `proxy`, in every chunking).
#![forbid(unsafe_code)]

use std::net::SocketAddr;

/// Longest version 1 header, its CRLF included (the protocol's limit).
pub const MAX_V1: usize = 107;
/// Longest version 2 header accepted, its 16-byte fixed part included.
pub const MAX_V2: usize = 4096;
/// The fixed part of a version 2 header.
const V2_FIXED: usize = 16;
/// The version 2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// How a version 1 header starts.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes start like neither version's signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// Longer than [`MAX_V1`] (version 1) or [`MAX_V2`] (version 2).
    #[error("version {version} header over {max} bytes")]
    TooLong {
        /// 1 or 2.
        version: u8,
        /// The limit.
        max: usize,
    },
    /// A whole header that does not parse.
    #[error("malformed version {version} header: {reason}")]
    Malformed {
        /// 1 or 2.
        version: u8,
        /// What is wrong (a static hint).
        reason: &'static str,
    },
}

/// What the header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// The balancer relays a client: the client's address and port
    /// (`source`), and the address and port the client connected to
    /// (`destination`).
    Proxied {
        /// The client.
        source: SocketAddr,
        /// Where the client connected (the balancer's front).
        destination: SocketAddr,
    },
    /// Version 2 `LOCAL`: the balancer speaks for itself (a health
    /// check); the connection's own addresses apply.
    Local,
    /// Version 1 `UNKNOWN`, or version 2 with the UNSPEC or UNIX family:
    /// no IP address to use; the connection's own addresses apply.
    Unknown,
}

/// A whole, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// Its length in bytes.
    pub len: usize,
    /// What it says.
    pub addresses: Addresses,
}

impl Header {
    /// `proxy`, `local` or `unknown`, for logs.
    pub fn kind(&self) -> &'static str {
        match self.addresses {
            Addresses::Proxied { .. } => "proxy",
            Addresses::Local => "local",
            Addresses::Unknown => "unknown",
        }
    }
}

/// The progress of [`Reader::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Consume `take` bytes (always every byte offered), then wait for
    /// more.
    More {
        /// Bytes to consume.
        take: usize,
    },
    /// Consume `take` bytes: the header ends there; what follows is the
    /// client's.
    Done {
        /// Bytes to consume.
        take: usize,
        /// The header.
        header: Header,
    },
}

/// One connection's header, as its bytes arrive.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// A reader that has seen nothing yet.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Bytes of the header consumed so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was consumed yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the header's bytes from the front of `peeked` (what waits on
    /// the socket, not consumed yet). The caller then consumes exactly the
    /// `take` bytes of the answer before calling again with what waits
    /// next. After an error the connection is to be closed.
    pub fn feed(&mut self, peeked: &[u8]) -> Result<Step, Error> {
        let mut taken = 0;
        while taken < peeked.len() {
            let rest = &peeked[taken..];
            let first = self.buf.first().copied().unwrap_or(rest[0]);
            let n = match first {
                b'\r' => {
                    let target = if self.buf.len() < V2_FIXED {
                        V2_FIXED
                    } else {
                        V2_FIXED + v2_length(&self.buf)
                    };
                    rest.len().min(target.saturating_sub(self.buf.len()))
                }
                b'P' => {
                    let room = rest.len().min(MAX_V1.saturating_sub(self.buf.len()));
                    rest[..room]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(room, |i| i + 1)
                }
                _ => return Err(Error::NotProxy),
            };
            if n == 0 {
                // check() ends every header that reaches its frame's end;
                // never reached, but never a loop either.
                return Err(Error::NotProxy);
            }
            self.buf.extend_from_slice(&rest[..n]);
            taken += n;
            if let Some(header) = self.check()? {
                return Ok(Step::Done {
                    take: taken,
                    header,
                });
            }
        }
        Ok(Step::More { take: taken })
    }

    /// The header, once whole; an error as soon as the bytes cannot be
    /// one. Checks in the same order whatever the chunking: signature,
    /// length, then the whole header.
    fn check(&self) -> Result<Option<Header>, Error> {
        let b = &self.buf;
        if b.first() == Some(&b'\r') {
            let sig = b.len().min(V2_SIGNATURE.len());
            if b[..sig] != V2_SIGNATURE[..sig] {
                return Err(Error::NotProxy);
            }
            if b.len() < V2_FIXED {
                return Ok(None);
            }
            let total = V2_FIXED + v2_length(b);
            if total > MAX_V2 {
                return Err(Error::TooLong {
                    version: 2,
                    max: MAX_V2,
                });
            }
            if b.len() < total {
                return Ok(None);
            }
            v2(b).map(Some)
        } else {
            let sig = b.len().min(V1_SIGNATURE.len());
            if b[..sig] != V1_SIGNATURE[..sig] {
                return Err(Error::NotProxy);
            }
            if b.last() == Some(&b'\n') {
                if !b.ends_with(b"\r\n") {
                    return Err(malformed(1, "does not end with CRLF"));
                }
                return v1(b).map(Some);
            }
            if b.len() >= MAX_V1 {
                return Err(Error::TooLong {
                    version: 1,
                    max: MAX_V1,
                });
            }
            Ok(None)
        }
    }
}

/// The length field of a version 2 header (at least 16 bytes).
fn v2_length(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[14], b[15]]))
}

fn malformed(version: u8, reason: &'static str) -> Error {
    Error::Malformed { version, reason }
}

/// A whole version 1 header (ending with its first LF).
fn v1(b: &[u8]) -> Result<Header, Error> {
    use ppp::v1::{Addresses as A, BinaryParseError, ParseError as E};
    let h = ppp::v1::Header::try_from(b).map_err(|e| {
        let reason = match e {
            BinaryParseError::InvalidUtf8(_) => "not ASCII",
            BinaryParseError::Parse(e) => match e {
                E::HeaderTooLong => {
                    return Error::TooLong {
                        version: 1,
                        max: MAX_V1,
                    };
                }
                E::InvalidPrefix | E::Partial | E::MissingPrefix => "no PROXY prefix",
                E::MissingProtocol | E::InvalidProtocol => "protocol is not TCP4, TCP6 or UNKNOWN",
                E::MissingSourceAddress
                | E::MissingDestinationAddress
                | E::InvalidSourceAddress(_)
                | E::InvalidDestinationAddress(_) => "bad or missing address",
                E::MissingSourcePort
                | E::MissingDestinationPort
                | E::InvalidSourcePort(_)
                | E::InvalidDestinationPort(_) => "bad or missing port",
                E::MissingNewLine | E::InvalidSuffix => "does not end with CRLF",
            },
        };
        malformed(1, reason)
    })?;
    if h.header.len() != b.len() {
        return Err(malformed(1, "does not end with CRLF"));
    }
    let addresses = match h.addresses {
        A::Tcp4(a) => Addresses::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        A::Tcp6(a) => Addresses::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        A::Unknown => Addresses::Unknown,
    };
    Ok(Header {
        version: 1,
        len: b.len(),
        addresses,
    })
}

/// A whole version 2 header (16 bytes and its length).
fn v2(b: &[u8]) -> Result<Header, Error> {
    use ppp::v2::{Addresses as A, Command, ParseError as E, Protocol};
    let h = ppp::v2::Header::try_from(b).map_err(|e| {
        malformed(
            2,
            match e {
                E::Incomplete(_) | E::Partial(..) => "shorter than its length",
                E::Prefix => "bad signature",
                E::Version(_) => "version is not 2",
                E::Command(_) => "command is not LOCAL or PROXY",
                E::AddressFamily(_) => "unknown address family",
                E::Protocol(_) => "unknown transport protocol",
                E::InvalidAddresses(..) => "length too short for its addresses",
                E::InvalidTLV(..) | E::Leftovers(_) => "bad TLV",
            },
        )
    })?;
    if h.len() != b.len() {
        return Err(malformed(2, "shorter than its length"));
    }
    if h.tlvs().any(|t| t.is_err()) {
        return Err(malformed(2, "bad TLV"));
    }
    let addresses = match h.command {
        // The balancer's own connection: addresses are ignored (the
        // protocol: "the receiver must accept the connection").
        Command::Local => Addresses::Local,
        Command::Proxy => match (h.addresses, h.protocol) {
            (A::IPv4(a), Protocol::Stream) => Addresses::Proxied {
                source: SocketAddr::from((a.source_address, a.source_port)),
                destination: SocketAddr::from((a.destination_address, a.destination_port)),
            },
            (A::IPv6(a), Protocol::Stream) => Addresses::Proxied {
                source: SocketAddr::from((a.source_address, a.source_port)),
                destination: SocketAddr::from((a.destination_address, a.destination_port)),
            },
            (A::Unspecified, Protocol::Unspecified) | (A::Unix(_), Protocol::Stream) => {
                Addresses::Unknown
            }
            (_, Protocol::Datagram) => return Err(malformed(2, "datagram protocol on a stream")),
            // 0x01, 0x02, 0x10, 0x20, 0x30: the protocol says to reject.
            _ => return Err(malformed(2, "invalid family and protocol pair")),
        },
    };
    Ok(Header {
        version: 2,
        len: b.len(),
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` whole; the step and the bytes consumed.
    fn whole(data: &[u8]) -> Result<Step, Error> {
        Reader::new().feed(data)
    }

    /// Feeds `data` one byte at a time, as a slow balancer would send it.
    fn bytewise(data: &[u8]) -> Result<Option<(usize, Header)>, Error> {
        let mut r = Reader::new();
        for (i, b) in data.iter().enumerate() {
            match r.feed(std::slice::from_ref(b))? {
                Step::More { take } => assert_eq!(take, 1),
                Step::Done { take, header } => {
                    assert_eq!(take, 1);
                    return Ok(Some((i + 1, header)));
                }
            }
        }
        Ok(None)
    }

    fn v2_header(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn tcp4_body() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 198, 51, 100, 1];
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&25u16.to_be_bytes());
        b
    }

    fn proxied(src: &str, dst: &str) -> Addresses {
        Addresses::Proxied {
            source: src.parse().expect("source"),
            destination: dst.parse().expect("destination"),
        }
    }

    #[test]
    fn version_1_headers() {
        let cases: &[(&str, Addresses)] = &[
            (
                "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n",
                proxied("192.0.2.7:40000", "198.51.100.1:25"),
            ),
            (
                "PROXY TCP6 2001:db8::7 2001:db8::1 40000 587\r\n",
                proxied("[2001:db8::7]:40000", "[2001:db8::1]:587"),
            ),
            ("PROXY UNKNOWN\r\n", Addresses::Unknown),
            (
                "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
                Addresses::Unknown,
            ),
        ];
        for (text, want) in cases {
            // The client's first bytes follow: never consumed.
            let data = format!("{text}EHLO client.example\r\n");
            let step = whole(data.as_bytes()).expect(text);
            let header = Header {
                version: 1,
                len: text.len(),
                addresses: *want,
            };
            assert_eq!(
                step,
                Step::Done {
                    take: text.len(),
                    header
                },
                "{text}"
            );
            assert_eq!(
                bytewise(data.as_bytes()),
                Ok(Some((text.len(), header))),
                "{text}"
            );
        }
        // The longest there can be is exactly 107 bytes.
        let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(MAX_V1 - 16));
        assert_eq!(longest.len(), MAX_V1);
        assert!(matches!(whole(longest.as_bytes()), Ok(Step::Done { take, .. }) if take == MAX_V1));
    }

    #[test]
    fn version_2_headers() {
        let tcp4 = v2_header(0x21, 0x11, &tcp4_body());
        let mut tcp6_body = Vec::new();
        tcp6_body.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        tcp6_body.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        tcp6_body.extend_from_slice(&[0x9c, 0x40, 0, 25]);
        let tcp6 = v2_header(0x21, 0x21, &tcp6_body);
        // TLVs (here a NOOP and an AUTHORITY) are skipped.
        let mut with_tlvs = tcp4_body();
        with_tlvs.extend_from_slice(&[0x04, 0, 2, 0, 0, 0x02, 0, 4, b'm', b'x', b'.', b'x']);
        let tlvs = v2_header(0x21, 0x11, &with_tlvs);
        let cases: Vec<(Vec<u8>, Addresses)> = vec![
            (tcp4.clone(), proxied("192.0.2.7:40000", "198.51.100.1:25")),
            (tcp6, proxied("[2001:db8::7]:40000", "[2001:db8::1]:25")),
            (tlvs, proxied("192.0.2.7:40000", "198.51.100.1:25")),
            // LOCAL: a health check; its addresses, if any, are ignored.
            (v2_header(0x20, 0x00, &[]), Addresses::Local),
            (v2_header(0x20, 0x11, &tcp4_body()), Addresses::Local),
            // UNSPEC and UNIX: no IP address to use.
            (v2_header(0x21, 0x00, &[]), Addresses::Unknown),
            (v2_header(0x21, 0x31, &[0u8; 216]), Addresses::Unknown),
        ];
        for (bytes, want) in cases {
            let mut data = bytes.clone();
            data.extend_from_slice(b"QUIT\r\n");
            let header = Header {
                version: 2,
                len: bytes.len(),
                addresses: want,
            };
            assert_eq!(
                whole(&data),
                Ok(Step::Done {
                    take: bytes.len(),
                    header
                })
            );
            assert_eq!(bytewise(&data), Ok(Some((bytes.len(), header))));
        }
        // The largest accepted, and one byte more.
        let body = {
            let mut b = tcp4_body();
            b.extend_from_slice(&[0x04]);
            let pad = MAX_V2 - V2_FIXED - b.len() - 2;
            b.extend_from_slice(&u16::try_from(pad).unwrap().to_be_bytes());
            b.resize(MAX_V2 - V2_FIXED, 0);
            b
        };
        let largest = v2_header(0x21, 0x11, &body);
        assert_eq!(largest.len(), MAX_V2);
        assert!(matches!(whole(&largest), Ok(Step::Done { take, .. }) if take == MAX_V2));
    }

    #[test]
    fn incomplete_headers_wait_and_take_everything_offered() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n";
        let v2 = v2_header(0x21, 0x11, &tcp4_body());
        for data in [&v1[..], &v2[..]] {
            for cut in 1..data.len() {
                // Including "PROXY TCP4 192.0.2." and "... 40000 ": not
                // errors, whatever a partial parse would say.
                assert_eq!(
                    whole(&data[..cut]),
                    Ok(Step::More { take: cut }),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn bad_headers() {
        let e1 = |reason| Error::Malformed { version: 1, reason };
        let e2 = |reason| Error::Malformed { version: 2, reason };
        let too_long_v1 = Error::TooLong {
            version: 1,
            max: MAX_V1,
        };
        let mut long_v1 = b"PROXY UNKNOWN ".to_vec();
        long_v1.resize(MAX_V1 + 20, b'x');
        let mut long_v1_crlf = long_v1.clone();
        long_v1_crlf.extend_from_slice(b"\r\n");
        let cases: Vec<(Vec<u8>, Error)> = vec![
            // Not a header at all: an SMTP client talking first, TLS.
            (b"EHLO client.example\r\n".to_vec(), Error::NotProxy),
            (b"\x16\x03\x01\x02\x00".to_vec(), Error::NotProxy),
            (
                b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                Error::NotProxy,
            ),
            (b"PROXY\r\n".to_vec(), Error::NotProxy),
            (b"PROXYTCP4\r\n".to_vec(), Error::NotProxy),
            (b"\r\n\r\n\0\r\nQUIT\r".to_vec(), Error::NotProxy),
            (b"\r\nGARBAGE".to_vec(), Error::NotProxy),
            (b"\n".to_vec(), Error::NotProxy),
            (b"\0".to_vec(), Error::NotProxy),
            // Version 1.
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                e1("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                e1("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
                e1("does not end with CRLF"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
                e1("bad or missing port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
                e1("does not end with CRLF"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".to_vec(),
                e1("bad or missing port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
                e1("bad or missing port"),
            ),
            (
                b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n".to_vec(),
                e1("bad or missing address"),
            ),
            (
                b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n".to_vec(),
                e1("bad or missing address"),
            ),
            (
                b"PROXY TCP4 host.example 5.6.7.8 1 2\r\n".to_vec(),
                e1("bad or missing address"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n".to_vec(),
                e1("does not end with CRLF"),
            ),
            (b"PROXY UNKNOWN \xff\r\n".to_vec(), e1("not ASCII")),
            (long_v1, too_long_v1.clone()),
            (long_v1_crlf, too_long_v1),
            // Version 2.
            (v2_header(0x11, 0x11, &tcp4_body()), e2("version is not 2")),
            (
                v2_header(0x22, 0x11, &tcp4_body()),
                e2("command is not LOCAL or PROXY"),
            ),
            (
                v2_header(0x21, 0x41, &tcp4_body()),
                e2("unknown address family"),
            ),
            (
                v2_header(0x21, 0x13, &tcp4_body()),
                e2("unknown transport protocol"),
            ),
            (
                v2_header(0x21, 0x11, &tcp4_body()[..11]),
                e2("length too short for its addresses"),
            ),
            (
                v2_header(0x21, 0x12, &tcp4_body()),
                e2("datagram protocol on a stream"),
            ),
            (
                v2_header(0x21, 0x10, &tcp4_body()),
                e2("invalid family and protocol pair"),
            ),
            (
                v2_header(0x21, 0x01, &[]),
                e2("invalid family and protocol pair"),
            ),
            (
                v2_header(0x21, 0x11, &[tcp4_body(), vec![0x04, 0, 9, 0]].concat()),
                e2("bad TLV"),
            ),
            (
                v2_header(0x21, 0x11, &[tcp4_body(), vec![0x04, 0]].concat()),
                e2("bad TLV"),
            ),
        ];
        for (data, want) in &cases {
            assert_eq!(whole(data).as_ref(), Err(want), "{:?}", data);
            assert_eq!(bytewise(data).as_ref(), Err(want), "{:?}", data);
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn oversize_v2_length_is_refused_after_16_bytes() {
        // The length field says 65535: refused as soon as it is read,
        // without waiting for (or holding) the rest.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let want = Err(Error::TooLong {
            version: 2,
            max: MAX_V2,
        });
        assert_eq!(whole(&h), want);
        let mut r = Reader::new();
        assert_eq!(r.feed(&h[..15]), Ok(Step::More { take: 15 }));
        assert_eq!(r.feed(&h[15..]), want);
        // One byte over the limit.
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&u16::try_from(MAX_V2 - V2_FIXED + 1).unwrap().to_be_bytes());
        assert_eq!(whole(&h), want);
    }

    #[test]
    fn never_takes_past_the_header() {
        let v2 = v2_header(0x21, 0x11, &tcp4_body());
        let mut r = Reader::new();
        // First 10 bytes, then the rest together with the client's.
        assert_eq!(r.feed(&v2[..10]), Ok(Step::More { take: 10 }));
        let mut rest = v2[10..].to_vec();
        rest.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c");
        match r.feed(&rest) {
            Ok(Step::Done { take, header }) => {
                assert_eq!(take, v2.len() - 10);
                assert_eq!(header.len, v2.len());
                assert_eq!(header.kind(), "proxy");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.len(), v2.len());
        assert!(!r.is_empty());
        assert!(Reader::new().is_empty());
        assert_eq!(Reader::new().feed(b""), Ok(Step::More { take: 0 }));
    }
}
