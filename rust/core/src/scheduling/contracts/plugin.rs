//! What a plugin factory builds: one configured plugin instance of one kind. The registry maps
//! upstream type names to factories; the scheduler wires the results into profiles.

use std::sync::Arc;

use crate::scheduling::contracts::decider::PdDecider;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::picker::Picker;
use crate::scheduling::contracts::profile_handler::HandlerSpec;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::producers::precise_prefix_cache_producer::BlockIndex;

pub enum Plugin {
    Filter(Arc<dyn Filter>),
    Scorer(Arc<dyn Scorer>),
    Picker(Arc<dyn Picker>),
    ProfileHandler(HandlerSpec),
    Decider(Arc<dyn PdDecider>),
    /// A data producer: the exact KV-block index fed by endpoint events.
    Producer(Arc<BlockIndex>),
    /// Accepted for upstream configs; its behaviour is built in elsewhere (e.g. the disagg
    /// handler sets the prefill header itself, which upstream's prefill-header-handler does).
    BuiltIn,
}
