//! Answers fetched from an upstream that are lists (tag lists, referrers), kept in memory with
//! the time they were fetched: the callers decide what is fresh (`proxy.tagttl`) and whether an
//! old answer is still worth serving. Bounded: at most `MAX_LISTS` keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys kept at most.
const MAX_LISTS: usize = 1024;

/// Upstream lists by key, each with when it was fetched.
pub(super) struct UpstreamLists<T> {
    lists: Mutex<HashMap<String, (Instant, Arc<T>)>>,
}

impl<T> Default for UpstreamLists<T> {
    fn default() -> Self {
        UpstreamLists {
            lists: Mutex::default(),
        }
    }
}

impl<T> UpstreamLists<T> {
    /// The list kept under `key`, whatever its age, with its age.
    pub fn get(&self, key: &str) -> Option<(Duration, Arc<T>)> {
        self.lock()
            .get(key)
            .map(|(at, list)| (at.elapsed(), list.clone()))
    }

    /// Keeps `list` under `key`. When full, lists older than `ttl` go first, then all.
    pub fn insert(&self, key: String, list: Arc<T>, ttl: Duration) {
        let mut lists = self.lock();
        if lists.len() >= MAX_LISTS {
            lists.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        if lists.len() >= MAX_LISTS {
            lists.clear();
        }
        lists.insert(key, (Instant::now(), list));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<T>)>> {
        self.lists.lock().expect("upstream lists poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_aged() {
        let lists = UpstreamLists::<u32>::default();
        for i in 0..MAX_LISTS + 10 {
            lists.insert(format!("k{i}"), Arc::new(i as u32), Duration::ZERO);
        }
        assert!(lists.lock().len() <= MAX_LISTS);
        let (age, v) = lists
            .get(&format!("k{}", MAX_LISTS + 9))
            .expect("newest kept");
        assert_eq!(*v, (MAX_LISTS + 9) as u32);
        assert!(age < Duration::from_secs(60));
        assert!(lists.get("absent").is_none());
    }
}
