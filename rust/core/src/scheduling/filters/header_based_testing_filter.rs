//! header-based-testing-filter (upstream's conformance suite): keeps exactly the endpoints the
//! `test-epp-endpoint-selection` header names ("ip" or "ip:port", comma-separated), in the
//! header's order, one per IP; no header keeps none. Test-only: it lets a suite choose the pick.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

pub const SELECTION_HEADER: &str = "test-epp-endpoint-selection";

pub struct HeaderBasedTestingFilter;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Filter(Arc::new(HeaderBasedTestingFilter)))
}

fn unbracket(s: &str) -> &str {
    s.trim().trim_start_matches('[').trim_end_matches(']')
}

/// "ip:port" (IPv6 in brackets) into (ip, Some(port)), or a bare ip into (ip, None).
fn split(item: &str) -> (&str, Option<&str>) {
    if let Some(rest) = item.strip_prefix('[') {
        return match rest.split_once("]:") {
            Some((ip, port)) => (ip, Some(port)),
            None => (unbracket(item), None),
        };
    }
    match item.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') => (ip, Some(port)),
        _ => (item, None),
    }
}

impl Filter for HeaderBasedTestingFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let wanted = cycle.request.header(SELECTION_HEADER).unwrap_or("");
        let mut kept: Vec<u32> = Vec::new();
        for item in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (ip, port) = split(item);
            let ip = unbracket(ip);
            let found = candidates.iter().copied().find(|&c| {
                let ep = cycle.endpoint(c);
                unbracket(&ep.info.ip) == ip
                    && port.is_none_or(|port| {
                        ep.address().rsplit_once(':').map(|(_, p)| p) == Some(port)
                    })
            });
            if let Some(c) = found {
                if !kept
                    .iter()
                    .any(|&k| cycle.endpoint(k).info.ip == cycle.endpoint(c).info.ip)
                {
                    kept.push(c);
                }
            }
        }
        *candidates = kept;
        Ok(())
    }
}
