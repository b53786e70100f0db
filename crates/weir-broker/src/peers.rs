//! Connections per peer address, for the front ends' per-address caps (AMQP's and
//! Kafka's `max_connections_per_peer`): one address cannot take every connection
//! slot of a listener. A front end takes a [`PeerSlot`] when it accepts a
//! connection and holds it for the connection's life; dropping it gives it back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per peer address, shared by a front end's listeners.
#[derive(Clone, Debug, Default)]
pub struct PeerCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl PeerCounts {
    /// Counts a connection from `ip`, unless it already has `limit`.
    pub fn take(&self, ip: IpAddr, limit: usize) -> Option<PeerSlot> {
        // The map is consistent between statements, so a poisoned lock is usable.
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open(&self, ip: IpAddr) -> usize {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection counted against its peer address until dropped.
#[derive(Debug)]
pub struct PeerSlot {
    counts: PeerCounts,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_limit_and_a_slot_back_when_one_closes() {
        let counts = PeerCounts::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = counts.take(a, 2).unwrap();
        let _second = counts.take(a, 2).unwrap();
        assert!(counts.take(a, 2).is_none(), "a third from the same address");
        assert!(
            counts.take(b, 2).is_some(),
            "another address is not held back"
        );
        drop(first);
        assert_eq!(counts.open(a), 1);
        assert!(counts.take(a, 2).is_some());
    }
}
