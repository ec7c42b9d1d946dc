//! Loopback ports for the processes the stack and the tests start, chosen so that
//! nothing else takes them between the choice and the `listen`.
//!
//! A port the kernel hands out for `bind(:0)` comes from the ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768–60999 on Debian), the range it also draws
//! the source port of every outgoing connection from. With wrk, nginx and Prometheus
//! opening thousands of connections a second, a port freed after `bind(:0)` is often
//! taken as a source port before the process meant to listen on it starts ("Address
//! already in use"). So ports are chosen below the ephemeral range, where the kernel
//! never picks one by itself: from a per-process starting point, each checked by a
//! bind, never the same twice in one process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port chosen: above the registered services most machines run.
const LOWEST: u32 = 10_000;

/// Ports handed out by this process so far.
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// A loopback port nobody listens on now, outside the kernel's ephemeral range.
pub fn free_port() -> anyhow::Result<u16> {
    let highest = ephemeral_low().saturating_sub(1).max(LOWEST + 1_000);
    let span = highest - LOWEST;
    // Processes that run at once (test binaries, a demo beside the tests) start
    // far apart.
    let start = (std::process::id().wrapping_mul(7_919)) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (start + n) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    anyhow::bail!("no free loopback port in {LOWEST}–{highest}")
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_distinct_and_bindable() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        for p in &ports {
            assert!(
                u32::from(*p) >= LOWEST && u32::from(*p) < low,
                "{p} is in the ephemeral range from {low}"
            );
            TcpListener::bind(("127.0.0.1", *p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice: {ports:?}");
    }
}
