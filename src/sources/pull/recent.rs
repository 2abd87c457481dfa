//! The record of recently acknowledged event ids: a redelivery of one is confirmed without
//! publishing it again.

use std::collections::{HashSet, VecDeque};

use vodbridge_core::EventId;

/// A bounded FIFO record of recently acknowledged ids.
pub(crate) struct RecentIds {
    capacity: usize,
    order: VecDeque<EventId>,
    set: HashSet<EventId>,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    pub(super) fn contains(&self, id: &EventId) -> bool {
        self.set.contains(id)
    }

    pub(super) fn insert(&mut self, id: EventId) {
        if self.capacity == 0 || !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}
