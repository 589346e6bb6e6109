//! Caps on what one client address holds at once (RTMP connections, WHIP
//! sessions, HTTP connections), so one address cannot take every slot.
//!
//! Contract: [`PerAddress::acquire`] gives a [`Slot`] while the address
//! holds fewer than the cap, and the slot frees itself when dropped (with
//! the connection or session it stands for). Addresses count as in
//! [`super::attempts`]: IPv4 alone, IPv6 by /64. Only addresses holding
//! slots are remembered, so the table is bounded by the slots in use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::attempts::key;

/// Slots in use per client address, at most `max` each.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One slot of one address; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    table: Arc<PerAddress>,
    addr: IpAddr,
}

impl PerAddress {
    /// A table allowing `max` slots per address (`max` of 0 allows none).
    pub fn new(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The cap per address.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `addr`, or `None` if it holds `max` already.
    pub fn acquire(self: &Arc<Self>, addr: IpAddr) -> Option<Slot> {
        let addr = key(addr);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(addr).or_insert(0);
        if *count >= self.max {
            if *count == 0 {
                held.remove(&addr);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            table: self.clone(),
            addr,
        })
    }

    /// Slots `addr` holds now.
    pub fn held(&self, addr: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&key(addr)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .table
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn an_address_holds_at_most_the_cap_and_dropping_frees_a_slot() {
        let table = PerAddress::new(2);
        let a = table.acquire(ip("192.0.2.1")).expect("first");
        let b = table.acquire(ip("192.0.2.1")).expect("second");
        assert!(table.acquire(ip("192.0.2.1")).is_none());
        // Another address is not affected; the same /64 is the same client.
        let _other = table.acquire(ip("192.0.2.2")).expect("another address");
        let _v6 = table.acquire(ip("2001:db8::1")).expect("v6");
        let _v6b = table.acquire(ip("2001:db8::2")).expect("v6, same /64");
        assert!(table.acquire(ip("2001:db8::ffff")).is_none());
        drop(a);
        assert_eq!(table.held(ip("192.0.2.1")), 1);
        let _c = table.acquire(ip("192.0.2.1")).expect("freed");
        drop(b);
        assert_eq!(table.held(ip("192.0.2.1")), 1);
    }

    #[test]
    fn only_addresses_holding_slots_are_remembered() {
        let table = PerAddress::new(1);
        for i in 0..100 {
            drop(table.acquire(ip(&format!("10.0.0.{i}"))));
        }
        assert!(table.held.lock().unwrap().is_empty());
        let none = PerAddress::new(0);
        assert!(none.acquire(ip("10.0.0.1")).is_none());
        assert!(none.held.lock().unwrap().is_empty());
    }
}
