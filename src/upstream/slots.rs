//! The cap on concurrent requests to one upstream (`proxy.maxfetches`). A request holds a slot
//! from before it is sent until its body is read or dropped; requests beyond the cap wait in
//! a FIFO queue (never refused), counted in `stevedore_upstream_queued_requests`.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    sem: Arc<Semaphore>,
    queued: prometheus::IntGauge,
}

/// A held slot; freed on drop. Cloneable so it can ride in a response's extensions.
#[derive(Clone)]
pub struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl Slots {
    pub fn new(max: usize, queued: prometheus::IntGauge) -> Slots {
        queued.set(0);
        Slots {
            sem: Arc::new(Semaphore::new(max.max(1))),
            queued,
        }
    }

    /// A slot, waiting in line for one if all are taken.
    pub async fn acquire(&self) -> Slot {
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Slot(Arc::new(p));
        }
        // Counted while waiting, a cancelled wait included.
        struct Queued<'a>(&'a prometheus::IntGauge);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        self.queued.inc();
        let _queued = Queued(&self.queued);
        let permit = self
            .sem
            .clone()
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed");
        Slot(Arc::new(permit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_queue_and_are_served_in_turn() {
        let gauge = prometheus::IntGauge::new("q", "q").unwrap();
        let slots = Arc::new(Slots::new(1, gauge.clone()));
        let first = slots.acquire().await;
        let s2 = slots.clone();
        let waiter = tokio::spawn(async move { s2.acquire().await });
        while gauge.get() != 1 {
            tokio::task::yield_now().await;
        }
        drop(first);
        let _second = waiter.await.unwrap();
        assert_eq!(gauge.get(), 0);
    }
}
