//! Loopback addresses for pods: 127.0.1.1 … 127.0.1.254, 127.0.2.1, … — one
//! per pod, never reused for the life of the allocator (a late packet or
//! proxy entry for a dead pod can never reach a new one). Linux routes all of
//! 127.0.0.0/8 to `lo`, so binding them needs no setup.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicU32, Ordering},
};

use super::ProcessError;

/// Hosts per /24: .1 to .254.
const HOSTS: u32 = 254;
/// 127.0.1.0/24 up to 127.255.255.0/24 (127.0.0.0/24 is left to localhost).
const SUBNETS: u32 = 256 * 256 - 1;

/// Hands out pod IPs in order, never twice. Cheap to share (`&self`).
#[derive(Debug, Default)]
pub struct IpAllocator {
    next: AtomicU32,
}

impl IpAllocator {
    /// An allocator whose first address is 127.0.1.1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next unused address, or [`ProcessError::IpsExhausted`] after
    /// about 16.6 million pods.
    pub fn allocate(&self) -> Result<Ipv4Addr, ProcessError> {
        let n = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < HOSTS * SUBNETS).then_some(n + 1)
            })
            .map_err(|_| ProcessError::IpsExhausted)?;
        Ok(address(n))
    }
}

/// The `n`th address (0-based).
impl IpAllocator {
    /// The next address on which `port` is free right now: addresses taken
    /// by another cluster (another rolltest process, or another cluster in
    /// this one) are skipped, so pods never collide on an address.
    pub fn allocate_free(&self, port: u16) -> Result<Ipv4Addr, ProcessError> {
        loop {
            let ip = self.allocate()?;
            if std::net::TcpListener::bind((ip, port)).is_ok() {
                return Ok(ip);
            }
        }
    }
}

fn address(n: u32) -> Ipv4Addr {
    let subnet = n / HOSTS + 1;
    let host = n % HOSTS + 1;
    // Both fit in a byte pair/byte by construction (subnet ≤ 65535, host ≤ 254).
    let [_, _, b, c] = subnet.to_be_bytes();
    Ipv4Addr::new(127, b, c, host as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_rollover() {
        assert_eq!(address(0), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(address(253), Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(address(254), Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(address(254 * 255), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(
            address(HOSTS * SUBNETS - 1),
            Ipv4Addr::new(127, 255, 255, 254)
        );
    }

    #[test]
    fn never_reuses_and_ends() {
        let a = IpAllocator::new();
        let first = a.allocate().ok();
        let second = a.allocate().ok();
        assert_eq!(first, Some(Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(second, Some(Ipv4Addr::new(127, 0, 1, 2)));
        a.next.store(HOSTS * SUBNETS - 1, Ordering::Relaxed);
        assert!(a.allocate().is_ok());
        assert!(matches!(a.allocate(), Err(ProcessError::IpsExhausted)));
    }
}
