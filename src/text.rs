//! Numbers and addresses as text, for what is written on the call path
//! (the messages the proxy builds, the audit lines), without `core::fmt`.
//!
//! Why by hand: `format!` and `write!` go through `core::fmt`'s argument
//! tables, padding and dynamic dispatch, and grow their `String` as they
//! write. On the accept path they were 14 % of the core's time, warm
//! (`perf` of `cargo bench --bench sip_core`: 8.6 % of the bench's samples,
//! of 61.6 % in `Core::handle_message`), and in the running proxy, with cold
//! caches, a large body of code fetched for a few digits. Decimal integers
//! go through `itoa` (the crate `serde_json` writes them with); it writes
//! neither hexadecimal nor addresses, which are written here. Each type is
//! a small buffer on the stack, like `itoa::Buffer`, so that any sink
//! (`String`, `BytesMut`, `Vec<u8>`) takes the text as a `&str`.

use std::net::IpAddr;

/// Lowercase hexadecimal of a `u64`.
pub struct Hex {
    buf: [u8; 16],
    start: usize,
}

impl Hex {
    /// No leading zeros, what `{:x}` writes.
    pub fn new(v: u64) -> Hex {
        Hex::padded(v, 1)
    }

    /// At least `width` digits (at most 16), zero-padded: `{:0width$x}`.
    pub fn padded(v: u64, width: usize) -> Hex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [b'0'; 16];
        let mut v = v;
        let mut start = 16;
        while v != 0 {
            start -= 1;
            buf[start] = DIGITS[(v & 0xf) as usize];
            v >>= 4;
        }
        Hex {
            buf,
            start: start.min(16 - width.clamp(1, 16)),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever written into `buf`.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

/// An IP address as `Display` writes it: dotted quad for IPv4, RFC 5952
/// for IPv6.
pub struct Ip {
    /// 39 bytes is the longest IPv6 text (eight groups of four).
    buf: [u8; 40],
    len: usize,
}

impl Ip {
    pub fn new(ip: IpAddr) -> Ip {
        let mut t = Ip {
            buf: [0; 40],
            len: 0,
        };
        match ip {
            IpAddr::V4(a) => {
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b".");
                    }
                    t.push(itoa::Buffer::new().format(o).as_bytes());
                }
            }
            // Rare on a trunk, and RFC 5952's rules (the longest run of
            // zero groups, IPv4-mapped forms) are std's to get right.
            IpAddr::V6(a) => {
                use std::io::Write as _;
                let mut rest = &mut t.buf[..];
                let _ = write!(rest, "{a}");
                t.len = 40 - rest.len();
            }
        }
        t
    }

    fn push(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    pub fn as_str(&self) -> &str {
        // Digits, dots, colons and hex letters only.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    proptest! {
        #[test]
        fn hex_is_what_fmt_writes(v in any::<u64>(), width in 1usize..=16, small in 0u64..300) {
            prop_assert_eq!(Hex::new(v).as_str().to_owned(), format!("{v:x}"));
            prop_assert_eq!(Hex::padded(v, width).as_str().to_owned(), format!("{v:0width$x}"));
            prop_assert_eq!(Hex::new(small).as_str().to_owned(), format!("{small:x}"));
            prop_assert_eq!(Hex::padded(small, 8).as_str().to_owned(), format!("{small:08x}"));
        }

        #[test]
        fn ips_are_what_display_writes(v4 in any::<u32>(), v6 in any::<u128>(), zeros in 0u32..8) {
            let a = IpAddr::V4(Ipv4Addr::from(v4));
            prop_assert_eq!(Ip::new(a).as_str().to_owned(), a.to_string());
            let b = IpAddr::V6(Ipv6Addr::from(v6));
            prop_assert_eq!(Ip::new(b).as_str().to_owned(), b.to_string());
            // Runs of zero groups, where RFC 5952 compresses.
            let c = IpAddr::V6(Ipv6Addr::from(v6 & !(u128::MAX >> (16 * zeros))));
            prop_assert_eq!(Ip::new(c).as_str().to_owned(), c.to_string());
        }
    }

    #[test]
    fn edges() {
        assert_eq!(Hex::new(0).as_str(), "0");
        assert_eq!(Hex::padded(0, 16).as_str(), "0000000000000000");
        assert_eq!(Hex::new(u64::MAX).as_str(), "ffffffffffffffff");
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(Ip::new(longest).as_str(), longest.to_string());
        let mapped: IpAddr = "::ffff:255.255.255.255".parse().unwrap();
        assert_eq!(Ip::new(mapped).as_str(), mapped.to_string());
        let v4: IpAddr = "255.255.255.255".parse().unwrap();
        assert_eq!(Ip::new(v4).as_str(), "255.255.255.255");
    }
}
