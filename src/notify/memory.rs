//! Notifications kept in memory, for tests and benchmarks.

use std::sync::atomic::Ordering;

use crate::engine::Notification;
use crate::notify::{DeliveryError, Notifier};

/// Notifications kept in memory: for tests and benchmarks. It can be taken down.
#[derive(Default)]
pub struct MemoryNotifier {
    received: std::sync::Mutex<Vec<Notification>>,
    down: std::sync::atomic::AtomicBool,
}

impl MemoryNotifier {
    /// Every notification received, in order (repeats included).
    pub fn received(&self) -> Vec<Notification> {
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Makes deliveries fail (`true`) or succeed again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }
}

impl Notifier for MemoryNotifier {
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(String::from("notifier is down (injected)").into());
        }
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(n.clone());
        Ok(())
    }
}
