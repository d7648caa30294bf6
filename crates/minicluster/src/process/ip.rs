//! Loopback addresses for pods: 127.0.X.1 … 127.0.X.254, 127.0.X+1.1, … — one
//! per pod, never reused for the life of the process (a late packet or proxy
//! entry for a dead pod can never reach a new one). Linux routes all of
//! 127.0.0.0/8 to `lo`, so binding them needs no setup.
//!
//! Every allocator of a process draws from one process-wide sequence, so two
//! clusters in one process (parallel tests) never hand out the same address;
//! each process starts its sequence in one of 15 blocks of 16 subnets
//! (chosen by its pid: 127.0.1.x, 127.0.17.x, …), so clusters of two rolltest processes started at the same moment
//! do not race for the same addresses either. An address another program
//! holds is skipped by [`IpAllocator::allocate_free`].
//!
//! An allocator also knows which of its addresses are *torn down*: the
//! kubelet marks a pod's address so once the pod's sandbox is gone (a real
//! kubelet's `StopPodSandbox`, CNI DEL: the address leaves the network and
//! packets to it are dropped), and the service proxies, which share the
//! allocator, emulate that for new connections their stale views still send
//! there (see `proxy`). Loopback itself cannot drop packets without root.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use super::ProcessError;

/// Hosts per /24: .1 to .254.
const HOSTS: u32 = 254;
/// 127.0.1.0/24 up to 127.255.255.0/24 (127.0.0.0/24 is left to localhost).
const SUBNETS: u32 = 256 * 256 - 1;

/// The process-wide sequence every allocator draws from.
static NEXT: AtomicU32 = AtomicU32::new(0);
/// Subnets per process block.
const BLOCK_SUBNETS: u32 = 16;

/// Blocks in 127.0.1.0–127.0.240.255, so pod addresses stay 127.0.X.N.
const BLOCKS: u32 = 15;

/// This process's first address index: its block of 16 subnets.
fn process_base() -> u32 {
    (std::process::id() % BLOCKS) * BLOCK_SUBNETS * HOSTS
}

/// Hands out pod IPs in order, never twice in this process, and remembers
/// which were torn down. Cheap to share (`&self`).
#[derive(Debug, Default)]
pub struct IpAllocator {
    /// Addresses whose pod sandbox is gone (never reused, so never cleared).
    torn_down: Mutex<HashSet<IpAddr>>,
}

impl IpAllocator {
    /// An allocator (all of a process's allocators share one sequence).
    pub fn new() -> Self {
        Self::default()
    }

    /// The next unused address, or [`ProcessError::IpsExhausted`] after
    /// about 16.6 million pods.
    pub fn allocate(&self) -> Result<Ipv4Addr, ProcessError> {
        let n = take(&NEXT)?;
        Ok(address((process_base() + n) % (HOSTS * SUBNETS)))
    }
}

impl IpAllocator {
    /// Marks `ip` torn down: its pod's sandbox is gone, so on a real network
    /// nothing answers there any more (packets are dropped).
    pub fn tear_down(&self, ip: IpAddr) {
        self.torn_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ip);
    }

    /// Whether `ip` was torn down (see [`tear_down`](Self::tear_down)).
    pub fn is_torn_down(&self, ip: IpAddr) -> bool {
        self.torn_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
    }
}

/// The next index of a sequence, until every address has been handed out.
fn take(counter: &AtomicU32) -> Result<u32, ProcessError> {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < HOSTS * SUBNETS).then_some(n + 1)
        })
        .map_err(|_| ProcessError::IpsExhausted)
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
    fn torn_down_addresses_are_remembered_per_allocator() {
        let (a, b) = (IpAllocator::new(), IpAllocator::new());
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 9, 9));
        assert!(!a.is_torn_down(ip));
        a.tear_down(ip);
        assert!(a.is_torn_down(ip));
        assert!(!b.is_torn_down(ip), "another cluster's network");
    }

    #[test]
    fn never_reuses_and_ends() {
        let counter = AtomicU32::new(0);
        assert_eq!(take(&counter).ok(), Some(0));
        assert_eq!(take(&counter).ok(), Some(1));
        counter.store(HOSTS * SUBNETS - 1, Ordering::Relaxed);
        assert!(take(&counter).is_ok());
        assert!(matches!(take(&counter), Err(ProcessError::IpsExhausted)));
        // The process's sequence starts in its own block, never in 127.0.0.x.
        let first = address(process_base());
        assert!(first.octets()[1] > 0 || first.octets()[2] > 0, "{first}");
    }
}
