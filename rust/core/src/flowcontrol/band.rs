//! A priority band: the flows of one priority and the inter-flow fairness policy that picks
//! which flow's head goes next. Owned by the dispatch thread only.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use super::config::{BandConfig, FairnessPolicy};
use super::item::Item;
use super::program_aware::Candidate;
use super::queue::FlowQueue;

pub struct Band<R> {
    config: BandConfig,
    /// Non-empty flows; an emptied flow is removed so idle tenants cost nothing.
    flows: Vec<FlowQueue<R>>,
    index: HashMap<Arc<str>, usize>,
    /// The slot found last: a run of one flow's requests (one interned key) hashes nothing.
    hint: usize,
    cursor: usize,
    /// Global-strict: (item id, flow slot, flow serial) with at least one entry at or below each
    /// flow's head id, so the smallest entry that still names its flow's head is the oldest head
    /// (no scan). Serials, not keys: no reference count to touch per request (a key's count can
    /// share a cache line with what producers write).
    heads: BinaryHeap<Reverse<(u64, usize, u64)>>,
    next_serial: u64,
    /// The flow emptied last, kept with its buffer: a tenant whose every request goes as soon as
    /// it comes (the common, unsaturated case) does not build and free a queue per request.
    idle: Option<FlowQueue<R>>,
}

impl<R> Band<R> {
    pub fn new(config: BandConfig) -> Self {
        Band {
            config,
            flows: Vec::new(),
            index: HashMap::new(),
            hint: 0,
            cursor: 0,
            heads: BinaryHeap::new(),
            next_serial: 0,
            idle: None,
        }
    }

    fn strict(&self) -> bool {
        self.config.fairness_policy == FairnessPolicy::GlobalStrict
    }

    /// Global-strict: record flow `i`'s current head.
    fn arm(&mut self, i: usize) {
        if let Some(h) = self.flows[i].head() {
            let entry = Reverse((h.id, i, self.flows[i].serial));
            self.heads.push(entry);
        }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// The slot of `flow`'s queue.
    fn find(&mut self, flow: &Arc<str>) -> Option<usize> {
        if let Some(f) = self.flows.get(self.hint) {
            if Arc::ptr_eq(&f.key, flow) {
                return Some(self.hint);
            }
        }
        let i = *self.index.get(flow)?;
        self.hint = i;
        Some(i)
    }

    pub fn push(&mut self, item: Arc<Item<R>>) {
        let i = match self.find(item.flow()) {
            Some(i) => i,
            None => {
                let serial = self.serial();
                let flow = match self.idle.take() {
                    Some(mut f) if f.key == *item.flow() => {
                        f.serial = serial;
                        f
                    }
                    _ => FlowQueue::new(item.flow().clone(), serial, self.config.ordering_policy),
                };
                self.flows.push(flow);
                self.index.insert(item.flow().clone(), self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        let id = item.id;
        self.flows[i].push(item);
        if self.strict() && self.flows[i].head().is_some_and(|h| h.id == id) {
            self.arm(i);
        }
    }

    /// Give back an item whose dispatch must wait; it goes first in its flow again.
    pub fn push_front(&mut self, item: Arc<Item<R>>) {
        let flow = item.flow().clone();
        match self.find(&flow) {
            Some(i) => {
                self.flows[i].push_front(item);
                self.cursor = i; // round-robin: the turn was not used
                if self.strict() {
                    self.arm(i);
                }
            }
            None => {
                self.push(item);
                self.cursor = self.flows.len() - 1;
            }
        }
    }

    /// Claim the next item by the fairness policy; None when the band holds no live item.
    pub fn claim_next(&mut self) -> Option<Arc<Item<R>>> {
        loop {
            let i = match self.config.fairness_policy {
                FairnessPolicy::GlobalStrict => self.oldest_head()?,
                FairnessPolicy::RoundRobin => self.next_in_turn()?,
                FairnessPolicy::ProgramAware => self.least_served()?,
            };
            let item = self.flows[i].pop().expect("flow has a head");
            if self.flows[i].is_empty() {
                self.remove_flow(i);
            } else if self.strict() {
                self.arm(i);
            }
            if item.claim() {
                return Some(item);
            }
            // Cancelled between peek and claim: a tombstone, try again.
        }
    }

    fn oldest_head(&mut self) -> Option<usize> {
        loop {
            let Reverse((id, i, serial)) = self.heads.pop()?;
            if self.flows.get(i).is_none_or(|f| f.serial != serial) {
                continue; // the flow emptied since, or moved (and was armed where it went)
            }
            match self.flows[i].head() {
                None => self.remove_flow(i),
                Some(h) if h.id == id => {
                    // Popped: the flow gets a new entry once this head leaves (claim_next).
                    return Some(i);
                }
                Some(_) => self.arm(i), // its head moved on (claimed, cancelled): re-enter it
            }
        }
    }

    /// program-aware-fairness: the flow its policy scores highest among the backlogged ones.
    fn least_served(&mut self) -> Option<usize> {
        let policy = self.config.program_aware.0.clone()?;
        let mut i = 0;
        while i < self.flows.len() {
            if self.flows[i].head().is_some() {
                i += 1;
            } else {
                self.remove_flow(i);
            }
        }
        let now = std::time::Instant::now();
        let heads: Vec<(u64, std::time::Instant)> = self
            .flows
            .iter_mut()
            .map(|f| f.head().map_or((0, now), |h| (h.id, h.enqueued)))
            .collect();
        let candidates: Vec<Candidate<'_>> = self
            .flows
            .iter()
            .zip(&heads)
            .map(|(f, &(head_id, head_enqueued))| Candidate {
                flow: &f.key,
                head_enqueued,
                head_id,
            })
            .collect();
        let i = policy.pick(&candidates, now)?;
        policy.dispatched(&self.flows[i].key, now);
        Some(i)
    }

    fn next_in_turn(&mut self) -> Option<usize> {
        while !self.flows.is_empty() {
            if self.cursor >= self.flows.len() {
                self.cursor = 0;
            }
            let i = self.cursor;
            if self.flows[i].head().is_some() {
                self.cursor = i + 1;
                return Some(i);
            }
            self.remove_flow(i);
        }
        None
    }

    /// Drop an emptied flow. Round-robin keeps the others in turn order (a flow moved behind
    /// the cursor would lose its turn this round); global-strict finds flows by key, so the
    /// last flow can take the slot.
    fn remove_flow(&mut self, i: usize) {
        if self.strict() {
            let gone = self.flows.swap_remove(i);
            self.index.remove(&gone.key);
            if let Some(moved) = self.flows.get(i) {
                self.index.insert(moved.key.clone(), i);
                self.arm(i); // its entries name the slot it left
            }
            self.keep_idle(gone);
            return;
        }
        let gone = self.flows.remove(i);
        self.index.remove(&gone.key);
        self.keep_idle(gone);
        for (j, f) in self.flows.iter().enumerate().skip(i) {
            if let Some(slot) = self.index.get_mut(&f.key) {
                *slot = j;
            }
        }
        if i < self.cursor {
            self.cursor -= 1;
        }
    }

    fn keep_idle(&mut self, flow: FlowQueue<R>) {
        if flow.is_empty() {
            self.idle = Some(flow);
        }
    }

    pub fn has_live(&mut self) -> bool {
        let mut i = 0;
        while i < self.flows.len() {
            if self.flows[i].head().is_some() {
                return true;
            }
            self.remove_flow(i);
            i = i.min(self.flows.len());
        }
        false
    }

    pub fn drain(&mut self) -> Vec<Arc<Item<R>>> {
        self.index.clear();
        self.heads.clear();
        self.flows.drain(..).flat_map(|mut f| f.drain()).collect()
    }
}
