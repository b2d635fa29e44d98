//! Profile handlers (which profiles run, how picks combine) and the prefill/decode deciders
//! they consult.
pub mod data_parallel_profile_handler;
pub mod disagg_profile_handler;
pub mod header_profile_handler;
pub mod pd_decider;
pub mod single_profile_handler;
pub mod stage_headers;
