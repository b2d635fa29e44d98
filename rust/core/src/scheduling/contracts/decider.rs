//! The prefill/decode decider contract: once the decode endpoint is chosen, say whether the
//! prompt should be prefilled on another endpoint.

use crate::scheduling::cycle::Cycle;

pub trait PdDecider: Send + Sync {
    fn decide(&self, cycle: &Cycle<'_>, decode: u32) -> bool;
}
