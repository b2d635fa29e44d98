//! A priority band: the flows of one priority and the inter-flow fairness policy that picks
//! which flow's head goes next. Owned by the dispatch thread only.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::{BandConfig, FairnessPolicy};
use super::item::Item;
use super::queue::FlowQueue;

pub struct Band<R> {
    config: BandConfig,
    /// Non-empty flows; an emptied flow is removed so idle tenants cost nothing.
    flows: Vec<FlowQueue<R>>,
    index: HashMap<Arc<str>, usize>,
    cursor: usize,
}

impl<R> Band<R> {
    pub fn new(config: BandConfig) -> Self {
        Band {
            config,
            flows: Vec::new(),
            index: HashMap::new(),
            cursor: 0,
        }
    }

    pub fn push(&mut self, item: Arc<Item<R>>) {
        let i = match self.index.get(&item.flow) {
            Some(&i) => i,
            None => {
                self.flows.push(FlowQueue::new(
                    item.flow.clone(),
                    self.config.ordering_policy,
                ));
                self.index.insert(item.flow.clone(), self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        self.flows[i].push(item);
    }

    /// Give back an item whose dispatch must wait; it goes first in its flow again.
    pub fn push_front(&mut self, item: Arc<Item<R>>) {
        let flow = item.flow.clone();
        match self.index.get(&flow) {
            Some(&i) => {
                self.flows[i].push_front(item);
                self.cursor = i; // round-robin: the turn was not used
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
            };
            let item = self.flows[i].pop().expect("flow has a head");
            if self.flows[i].is_empty() {
                self.remove_flow(i);
            }
            if item.claim() {
                return Some(item);
            }
            // Cancelled between peek and claim: a tombstone, try again.
        }
    }

    fn oldest_head(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        let mut i = 0;
        while i < self.flows.len() {
            match self.flows[i].head() {
                Some(h) => {
                    if best.is_none_or(|(id, _)| h.id < id) {
                        best = Some((h.id, i));
                    }
                    i += 1;
                }
                None => self.remove_flow(i), // the next flow moved to i: look at i again
            }
        }
        best.map(|(_, i)| i)
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

    /// Drop an emptied flow, keeping the others in turn order: a flow moved behind the cursor
    /// would lose its turn in this round of round-robin.
    fn remove_flow(&mut self, i: usize) {
        let gone = self.flows.remove(i);
        self.index.remove(&gone.key);
        for (j, f) in self.flows.iter().enumerate().skip(i) {
            if let Some(slot) = self.index.get_mut(&f.key) {
                *slot = j;
            }
        }
        if i < self.cursor {
            self.cursor -= 1;
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
        self.flows.drain(..).flat_map(|mut f| f.drain()).collect()
    }
}
