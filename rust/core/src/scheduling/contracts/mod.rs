//! The plugin contracts: what an admitter, filter, scorer, picker, profile handler, decider and screener promise,
//! the parameter parsing every factory shares, and what a factory returns. Plugins depend on
//! these; these depend on no plugin.

pub mod admitter;
pub mod decider;
pub mod filter;
pub mod params;
pub mod picker;
pub mod picker_params;
pub mod plugin;
pub mod profile_handler;
pub mod scorer;
pub mod screener;
