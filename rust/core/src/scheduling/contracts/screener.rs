//! A screener runs once per request before every profile and narrows the endpoints all of them
//! may consider (upstream's request-control Screener); it may also stamp response headers from
//! the endpoint that was picked.

use crate::scheduling::cycle::Cycle;

pub trait Screener: Send + Sync {
    /// Keep only the candidates every profile may use; an empty result refuses the request
    /// (503), with the reason returned.
    fn screen(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), String>;

    /// Response headers stamped from the picked endpoint.
    fn stamp(&self, cycle: &Cycle<'_>, picked: u32, out: &mut Vec<(String, String)>);
}
