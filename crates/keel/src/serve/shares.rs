//! Fair shares of HTTP connections, decided when a connection is accepted (the route is not known
//! yet, so by address): each address holds at most `max_per_source` connections (a trusted
//! proxy, which speaks for many clients, `max_per_proxy`), and the last `reserve` of
//! `max_connections` go only to addresses that hold fewer than [`RESERVED_FOR`] — so one client
//! that floods keel with idle connections fills its own share, never everyone's, and `/healthz`,
//! nginx's `/sso` and a machine's presence login still get in. And a write deadline: a response a
//! client stops reading closes its connection after `write_timeout` without progress.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::HttpLimits;

/// An address holding fewer connections than this may take a reserved one.
pub(super) const RESERVED_FOR: usize = 4;

/// Connections held, in all and by address.
pub(super) struct Shares {
    limits: HttpLimits,
    held: parking_lot::Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One connection counted until dropped.
pub(super) struct Held(Arc<Shares>, IpAddr);

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// `max_connections` are held.
    All,
    /// This address holds its share.
    Source,
    /// Only the reserve is left, and this address holds enough already.
    Reserve,
}

impl Shares {
    pub(super) fn new(limits: HttpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            held: parking_lot::Mutex::new((0, HashMap::new())),
        })
    }

    /// A connection for `peer`, or why not.
    pub(super) fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Held, Full> {
        let peer = canonical(peer);
        let l = &self.limits;
        let share = if l.proxies.iter().any(|n| n.contains(&peer)) {
            l.max_per_proxy
        } else {
            l.max_per_source
        };
        let mut guard = self.held.lock();
        let (total, by_source) = &mut *guard;
        let mine = by_source.get(&peer).copied().unwrap_or(0);
        if *total >= l.max_connections {
            return Err(Full::All);
        }
        if mine >= share {
            return Err(Full::Source);
        }
        if *total >= l.max_connections - l.reserve && mine >= RESERVED_FOR {
            return Err(Full::Reserve);
        }
        *total += 1;
        *by_source.entry(peer).or_insert(0) += 1;
        Ok(Held(self.clone(), peer))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut guard = (self.0).held.lock();
        let (total, by_source) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = by_source.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.1);
            }
        }
    }
}

/// An IPv4-mapped IPv6 peer as the IPv4 address it is (one address, one share).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An I/O whose writes fail with `TimedOut` when they make no progress for `limit`: a peer that
/// stops reading is cut, whatever it was being sent.
pub(super) struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub(super) fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a `Pending` write: the deadline, started at the first stall.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let limit = self.limit;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer read nothing within the write deadline",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize, reserve: usize) -> HttpLimits {
        HttpLimits {
            max_connections: max,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_per_source: per_source,
            max_per_proxy: 50,
            reserve,
            proxies: vec!["10.0.0.1/32".parse().unwrap()],
        }
    }

    #[test]
    fn one_address_fills_its_share_and_the_reserve_stays_for_the_others() {
        let shares = Shares::new(limits(100, 40, 10));
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<Held> = (0..40).map(|_| shares.take(flooder).unwrap()).collect();
        assert_eq!(shares.take(flooder).err(), Some(Full::Source));
        // Others fill up to the reserve…
        let others: Vec<Held> = (0..50)
            .map(|i| shares.take(IpAddr::from([192, 0, 2, 100 + (i / 5) as u8])).unwrap())
            .collect();
        assert_eq!(
            shares.take(IpAddr::from([192, 0, 2, 100])).err(),
            Some(Full::Reserve),
            "holds 5"
        );
        // …and a newcomer still gets in, out of the reserve.
        assert!(shares.take(IpAddr::from([192, 0, 2, 250])).is_ok());
        // The proxy has a share of its own.
        let proxy: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(shares.take(proxy).is_ok());
        drop((held, others));
        assert!(shares.take(flooder).is_ok(), "freed");
    }

    #[tokio::test]
    async fn a_peer_that_reads_nothing_is_cut_at_the_write_deadline() {
        use tokio::io::AsyncWriteExt;
        let (a, _b) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(a, Duration::from_millis(100));
        w.write_all(&[0; 64]).await.unwrap();
        let err = w.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
