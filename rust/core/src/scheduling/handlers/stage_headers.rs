//! The request headers a decision adds for the picked endpoint: where its disaggregated
//! stages run (prefill, encode) and, data-parallel, which rank was picked.

use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::Cycle;
use crate::scheduling::handlers::data_parallel_profile_handler::DATA_PARALLEL_HEADER;
use crate::scheduling::handlers::disagg_profile_handler::{ENCODERS_HEADER, PREFILLER_HEADER};

/// The headers that tell the decode endpoint where its other stages run (and, data-parallel,
/// which rank was picked).
pub fn stage_headers(
    cycle: &Cycle<'_>,
    picks: &Picks,
    data_parallel: bool,
) -> Vec<(String, String)> {
    let address = |p: u32| cycle.endpoint(p).address().to_owned();
    let mut headers = Vec::new();
    if let Some(p) = picks.prefill {
        headers.push((PREFILLER_HEADER.to_owned(), address(p)));
    }
    if !picks.encode.is_empty() {
        let hosts: Vec<String> = picks.encode.iter().map(|&p| address(p)).collect();
        headers.push((ENCODERS_HEADER.to_owned(), hosts.join(",")));
    }
    if data_parallel {
        headers.push((DATA_PARALLEL_HEADER.to_owned(), address(picks.primary[0])));
    }
    headers
}
