//! One flow's queue, ordered by the intra-flow policy. Owned by the dispatch thread only.
//! Items that ended elsewhere (cancelled, expired) are tombstones skipped at the head.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::config::OrderingPolicy;
use super::item::Item;

struct ByDeadline<R>(Reverse<(Instant, u64)>, Arc<Item<R>>);

impl<R> PartialEq for ByDeadline<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<R> Eq for ByDeadline<R> {}
impl<R> PartialOrd for ByDeadline<R> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<R> Ord for ByDeadline<R> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.cmp(&other.0)
    }
}

enum Order<R> {
    Fifo(VecDeque<Arc<Item<R>>>),
    Deadline(BinaryHeap<ByDeadline<R>>),
}

pub struct FlowQueue<R> {
    pub key: Arc<str>,
    /// Names this queue in its band's bookkeeping without a reference to the key (a fresh one
    /// each time the flow gets a queue again).
    pub serial: u64,
    order: Order<R>,
}

impl<R> FlowQueue<R> {
    pub fn new(key: Arc<str>, serial: u64, policy: OrderingPolicy) -> Self {
        let order = match policy {
            OrderingPolicy::Fcfs => Order::Fifo(VecDeque::new()),
            OrderingPolicy::Edf | OrderingPolicy::SloDeadline => Order::Deadline(BinaryHeap::new()),
        };
        FlowQueue { key, serial, order }
    }

    pub fn push(&mut self, item: Arc<Item<R>>) {
        match &mut self.order {
            Order::Fifo(q) => q.push_back(item),
            Order::Deadline(h) => h.push(ByDeadline(Reverse((item.order_deadline, item.id)), item)),
        }
    }

    /// Give a claimed item back to the front (its dispatch had to wait).
    pub fn push_front(&mut self, item: Arc<Item<R>>) {
        match &mut self.order {
            Order::Fifo(q) => q.push_front(item),
            Order::Deadline(_) => self.push(item),
        }
    }

    /// The next live item, dropping tombstones on the way.
    pub fn head(&mut self) -> Option<&Arc<Item<R>>> {
        match &mut self.order {
            Order::Fifo(q) => {
                while q.front().is_some_and(|i| !i.is_queued()) {
                    q.pop_front();
                }
                q.front()
            }
            Order::Deadline(h) => {
                while h.peek().is_some_and(|e| !e.1.is_queued()) {
                    h.pop();
                }
                h.peek().map(|e| &e.1)
            }
        }
    }

    pub fn pop(&mut self) -> Option<Arc<Item<R>>> {
        match &mut self.order {
            Order::Fifo(q) => q.pop_front(),
            Order::Deadline(h) => h.pop().map(|e| e.1),
        }
    }

    /// Every entry, live or not (eviction on shutdown).
    pub fn drain(&mut self) -> Vec<Arc<Item<R>>> {
        match &mut self.order {
            Order::Fifo(q) => q.drain(..).collect(),
            Order::Deadline(h) => h.drain().map(|e| e.1).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.order {
            Order::Fifo(q) => q.is_empty(),
            Order::Deadline(h) => h.is_empty(),
        }
    }
}
