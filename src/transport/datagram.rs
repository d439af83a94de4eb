//! Batched UDP: several datagrams per system call each way
//! (`recvmmsg`/`sendmmsg`). Under load, a receive thread that finds
//! datagrams waiting takes them all in one call, and what handling them
//! produced goes out in one call at the end of the batch.
//!
//! `nix` provides the calls safely; std and tokio have no batched form,
//! and `quinn-udp` batches receives only on non-blocking sockets and sends
//! one destination per call (GSO), where SIP sends to many.

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams taken per receive call, and sent per send call.
pub const BATCH: usize = 16;

/// A receive thread's buffers: `BATCH` slots of `slot` bytes each.
pub struct Receiver {
    slot: usize,
    buf: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    got: SmallVec<[(usize, SocketAddr); BATCH]>,
}

impl Receiver {
    /// `largest`: the longest datagram wanted. A slot holds one byte more,
    /// so a longer one shows as longer than `largest` (it is truncated to
    /// the slot) and is dropped by the caller, never read in part.
    pub fn new(largest: usize) -> Receiver {
        let slot = (largest + 1).min(65536);
        Receiver {
            slot,
            // Zeroed pages are not resident until the kernel writes them.
            buf: vec![0; slot * BATCH],
            headers: MultiHeaders::preallocate(BATCH, None),
            got: SmallVec::new(),
        }
    }

    /// Takes the datagrams waiting, up to `BATCH`. With `wait`, blocks
    /// until at least one arrives (or the socket's read timeout passes);
    /// without, fails with `EAGAIN` when none is there. Returns how many
    /// were taken; read them with [`Receiver::get`].
    pub fn recv(&mut self, sock: &UdpSocket, wait: bool) -> Result<usize, Errno> {
        self.got.clear();
        // An array, not a vector: `recvmmsg` borrows the slices for as
        // long as they borrow the buffer, which a type with drop code
        // could not allow.
        let mut slots = self.buf.chunks_exact_mut(self.slot);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let received = recvmmsg(
            sock.as_raw_fd(),
            &mut self.headers,
            iovs.iter_mut(),
            if wait {
                MsgFlags::MSG_WAITFORONE
            } else {
                MsgFlags::MSG_DONTWAIT
            },
            None,
        )?;
        for m in received {
            if let Some(from) = m.address.as_ref().and_then(to_std) {
                self.got.push((m.bytes, from));
            }
        }
        Ok(self.got.len())
    }

    /// The `i`th datagram of the last [`Receiver::recv`]: its source and
    /// bytes (longer than `largest` when it was too long).
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let (n, from) = self.got[i];
        let start = i * self.slot;
        (from, &self.buf[start..start + n])
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

thread_local! {
    /// The datagrams a receive thread's batch produced, sent when the
    /// batch is done. `None` on every other thread: they send at once.
    static OUTBOX: RefCell<Option<Vec<(SocketAddr, Bytes)>>> = const { RefCell::new(None) };
}

/// Holds `payload` for the end of this thread's batch; gives it back when
/// the thread batches nothing (send it now).
pub fn hold(to: SocketAddr, payload: Bytes) -> Option<Bytes> {
    OUTBOX.with_borrow_mut(|o| match o {
        Some(v) => {
            v.push((to, payload));
            None
        }
        None => Some(payload),
    })
}

/// From now on, this thread's datagrams wait for [`Sender::flush`].
pub struct Sender {
    headers: MultiHeaders<SockaddrStorage>,
}

impl Sender {
    pub fn start() -> Sender {
        OUTBOX.with_borrow_mut(|o| *o = Some(Vec::with_capacity(4 * BATCH)));
        Sender {
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Sends what the batch produced: on `v4` or `v6` by the destination's
    /// family, `BATCH` datagrams per call. A datagram that cannot be sent
    /// (no socket of its family, or the call fails on it) is logged and
    /// skipped; the rest still go.
    pub fn flush(&mut self, v4: Option<&UdpSocket>, v6: Option<&UdpSocket>) {
        let mut out =
            OUTBOX.with_borrow_mut(|o| o.as_mut().map(std::mem::take).unwrap_or_default());
        for (sock, ipv6) in [(v4, false), (v6, true)] {
            let mut todo: SmallVec<[&(SocketAddr, Bytes); 4 * BATCH]> =
                out.iter().filter(|(to, _)| to.is_ipv6() == ipv6).collect();
            if todo.is_empty() {
                continue;
            }
            let Some(sock) = sock else {
                tracing::warn!(to = %todo[0].0, n = todo.len(), "no UDP listener of this address family to send from");
                continue;
            };
            while !todo.is_empty() {
                let n = todo.len().min(BATCH);
                match self.send(sock, &todo[..n]) {
                    Ok(sent) => drop(todo.drain(..sent.max(1))),
                    Err(e) => {
                        tracing::debug!(to = %todo[0].0, error = %e, "UDP send failed");
                        todo.remove(0);
                    }
                }
            }
        }
        out.clear();
        // The allocation goes back for the next batch.
        OUTBOX.with_borrow_mut(|o| {
            if let Some(v) = o {
                if v.is_empty() {
                    std::mem::swap(v, &mut out);
                }
            }
        });
    }

    fn send(&mut self, sock: &UdpSocket, msgs: &[&(SocketAddr, Bytes)]) -> Result<usize, Errno> {
        let iovs: SmallVec<[[IoSlice<'_>; 1]; BATCH]> =
            msgs.iter().map(|(_, p)| [IoSlice::new(p)]).collect();
        let addrs: SmallVec<[Option<SockaddrStorage>; BATCH]> = msgs
            .iter()
            .map(|(to, _)| Some(SockaddrStorage::from(*to)))
            .collect();
        let sent = sendmmsg(
            sock.as_raw_fd(),
            &mut self.headers,
            iovs.iter(),
            addrs,
            [],
            MsgFlags::empty(),
        )?;
        Ok(sent.count())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        OUTBOX.with_borrow_mut(|o| *o = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams from several sources are taken in one call, in order, each
    /// with its source; one longer than `largest` shows as too long.
    #[test]
    fn takes_waiting_datagrams_at_once_and_marks_long_ones() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(b"one", to).unwrap();
        b.send_to(b"two", to).unwrap();
        a.send_to(&[b'x'; 200], to).unwrap();
        let mut r = Receiver::new(100);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let n = r.recv(&rx, true).unwrap();
            for i in 0..n {
                let (from, data) = r.get(i);
                seen.push((from, data.to_vec()));
            }
        }
        assert_eq!(seen[0], (a.local_addr().unwrap(), b"one".to_vec()));
        assert_eq!(seen[1], (b.local_addr().unwrap(), b"two".to_vec()));
        assert_eq!(seen[2].0, a.local_addr().unwrap());
        assert!(seen[2].1.len() > 100, "a long datagram must not look short");
        assert_eq!(r.recv(&rx, false), Err(Errno::EAGAIN));
    }

    /// On a batching thread, datagrams wait for `flush` and then all
    /// arrive, more than one call's worth; elsewhere `hold` hands them back.
    #[test]
    fn held_datagrams_go_out_on_flush() {
        assert!(hold("127.0.0.1:9".parse().unwrap(), Bytes::from_static(b"x")).is_some());
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut s = Sender::start();
        let n = BATCH + 3;
        for i in 0..n {
            assert!(hold(to, Bytes::from(format!("m{i}"))).is_none());
        }
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            rx.recv_from(&mut buf).is_err(),
            "nothing is sent before flush"
        );
        rx.set_nonblocking(false).unwrap();
        s.flush(Some(&tx), None);
        for i in 0..n {
            let (len, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(&buf[..len], format!("m{i}").as_bytes());
        }
        drop(s);
        assert!(hold(to, Bytes::from_static(b"y")).is_some());
    }
}
