//! p2p-source-producer: names a peer holding the request's prompt prefix in its KV cache, in
//! `x-kv-cache-source-host-port`, so the routing sidecar pulls those blocks over the P2P
//! connector instead of recomputing them. Before the profiles run it reads every candidate's
//! prefix match from a prefix producer (`prefixMatchInfoProducerName`, an approx or precise one),
//! keeps those within one block of the most cached tokens, and draws one weighted by
//! 1/(1 + waiting queue) at a point fixed by the request id (FNV-1a of `x-request-id`), so pulls
//! of a widely cached prefix spread over its holders. After the pick the header is set when that
//! peer holds at least `minCachedTokenDelta` more tokens than the endpoint computing the prefix
//! (the `prefillProfileName` profile's pick when it ran, else the primary); an inbound value is
//! always removed. Producers here carry no per-tier counts, so every cached block counts.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, PrefixProducers, PrefixSource};
use crate::scheduling::cycle::Cycle;
use crate::scheduling::filters::subset_filter::SubsetFilter;

/// The request header the sidecar reads (upstream's routing.KVCacheSourceHeader).
pub const KV_CACHE_SOURCE_HEADER: &str = "x-kv-cache-source-host-port";

/// The header upstream takes the request id from.
const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct P2pParams {
    prefix_match_info_producer_name: String,
    min_cached_token_delta: i64,
    prefill_profile_name: String,
}

impl Default for P2pParams {
    fn default() -> Self {
        P2pParams {
            prefix_match_info_producer_name: String::new(),
            min_cached_token_delta: 1,
            prefill_profile_name: String::new(),
        }
    }
}

pub struct P2pSourceProducer {
    producer_name: String,
    min_delta: usize,
    prefill_profile: String,
    source: OnceLock<PrefixSource>,
    /// Position of the `prefillProfileName` profile in the scheduler's list; None when no
    /// profile has that name.
    prefill_at: OnceLock<Option<usize>>,
}

/// What the producer found before the profiles ran: each candidate's cached prompt tokens (by
/// snapshot position) and the peer drawn as the source.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SourceCandidates {
    /// The request's blocks as the bound producer cuts them.
    hashes: Vec<u64>,
    cached: Vec<(u32, usize)>,
    best: Option<(u32, usize)>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: P2pParams = p.parse()?;
    if params.min_cached_token_delta < 1 {
        return Err(p.error(format_args!(
            "parameters.minCachedTokenDelta: must be >= 1, got {}",
            params.min_cached_token_delta
        )));
    }
    let prefill_profile = match params.prefill_profile_name.as_str() {
        "" => "prefill".to_owned(),
        name => name.to_owned(),
    };
    Ok(Plugin::P2pSource(Arc::new(P2pSourceProducer {
        producer_name: params.prefix_match_info_producer_name,
        min_delta: params.min_cached_token_delta as usize,
        prefill_profile,
        source: OnceLock::new(),
        prefill_at: OnceLock::new(),
    })))
}

/// FNV-1a (32 bit) of the request id onto [0, 1): the same request draws the same peer.
fn spread_fraction(request_id: &str) -> f64 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in request_id.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    f64::from(h) / 4_294_967_296.0
}

impl P2pSourceProducer {
    /// Bind to the prefix producer and to the prefill profile among `profiles` (names in order).
    pub fn bind(&self, producers: &PrefixProducers<'_>, profiles: &[&str]) -> Result<(), String> {
        let source = producers
            .resolve(&self.producer_name)?
            .ok_or("parameters.prefixMatchInfoProducerName: no prefix producer is configured")?;
        let _ = self.source.set(source);
        let at = profiles.iter().position(|p| *p == self.prefill_profile);
        let _ = self.prefill_at.set(at);
        Ok(())
    }

    /// Upstream's Produce: every candidate's cached tokens, and the peer drawn among those within
    /// one block of the most.
    pub fn prepare(&self, cycle: &Cycle<'_>) -> SourceCandidates {
        let Some(source) = self.source.get() else {
            return SourceCandidates::default();
        };
        let mut candidates: Vec<u32> = (0..cycle.snapshot.endpoints.len() as u32).collect();
        if SubsetFilter.filter(cycle, &mut candidates).is_err() {
            return SourceCandidates::default();
        }
        let (hashes, block_tokens) = source.blocks(cycle, &candidates);
        if hashes.is_empty() {
            return SourceCandidates::default();
        }
        let cached: Vec<(u32, usize)> = candidates
            .iter()
            .map(|&c| {
                let id = cycle.endpoint(c).info.id;
                (c, source.matched(cycle, id, &hashes) * block_tokens)
            })
            .filter(|(_, tokens)| *tokens > 0)
            .collect();
        let most = cached.iter().map(|(_, t)| *t).max().unwrap_or(0);
        let band: Vec<(u32, usize, f64)> = cached
            .iter()
            .filter(|(_, t)| t + block_tokens >= most)
            .map(|&(c, t)| {
                let waiting = cycle.endpoint(c).metrics.waiting;
                (c, t, 1.0 / (1.0 + f64::from(waiting)))
            })
            .collect();
        let total: f64 = band.iter().map(|(_, _, w)| w).sum();
        let mut target =
            spread_fraction(cycle.request.header(REQUEST_ID_HEADER).unwrap_or("")) * total;
        let mut best = band.last().map(|&(c, t, _)| (c, t));
        for &(c, t, w) in &band {
            if target < w {
                best = Some((c, t));
                break;
            }
            target -= w;
        }
        SourceCandidates {
            hashes,
            cached,
            best,
        }
    }

    /// The request ran where the cycle picked (primary, and prefill when disaggregated): an
    /// approximate producer learns it there, as upstream's producer does after each pick, also
    /// when no prefix-cache-scorer reads it.
    pub fn learn(&self, cycle: &Cycle<'_>, found: &SourceCandidates, picks: &Picks) {
        let Some(PrefixSource::Approx(a)) = self.source.get() else {
            return;
        };
        if found.hashes.is_empty() {
            return;
        }
        for &e in picks.primary.first().into_iter().chain(&picks.prefill) {
            a.record(cycle.endpoint(e), &found.hashes);
        }
    }

    /// Upstream's PreRequest: the header naming the drawn peer, when it out-caches the endpoint
    /// that computes the prefix by `minCachedTokenDelta` tokens.
    pub fn header(
        &self,
        cycle: &Cycle<'_>,
        found: &SourceCandidates,
        picks: &Picks,
    ) -> Option<(String, String)> {
        let (peer, peer_tokens) = found.best?;
        let prefill = self
            .prefill_at
            .get()
            .copied()
            .flatten()
            .and_then(|at| picks.of_profile(at));
        let computing = prefill.or_else(|| picks.primary.first().copied())?;
        let (peer_address, computing_address) = (
            cycle.endpoint(peer).address(),
            cycle.endpoint(computing).address(),
        );
        if peer_address == computing_address {
            return None;
        }
        let computing_tokens = found
            .cached
            .iter()
            .find(|(c, _)| *c == computing)
            .map_or(0, |(_, t)| *t);
        (peer_tokens.saturating_sub(computing_tokens) >= self.min_delta)
            .then(|| (KV_CACHE_SOURCE_HEADER.to_owned(), peer_address.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draw_point_is_fnv1a_of_the_request_id() {
        // FNV-1a 32 test vectors: "" -> 0x811c9dc5, "a" -> 0xe40c292c.
        assert_eq!(
            spread_fraction(""),
            f64::from(0x811c_9dc5u32) / 4_294_967_296.0
        );
        assert_eq!(
            spread_fraction("a"),
            f64::from(0xe40c_292cu32) / 4_294_967_296.0
        );
    }

    #[test]
    fn bad_params_name_the_field() {
        let raw = serde_json::json!({"minCachedTokenDelta": 0});
        let e = factory(&Params {
            name: "p",
            kind: "p2p-source-producer",
            raw: Some(&raw),
        })
        .err()
        .unwrap();
        assert!(e.0.contains("parameters.minCachedTokenDelta"), "{e}");
    }

    mod through_the_router {
        use super::super::KV_CACHE_SOURCE_HEADER;
        use crate::datalayer::Engine;
        use crate::scheduling::router::{Decision, RouteOptions, Router};

        const PATH: &str = "/v1/completions";
        const ADDRESSES: [&str; 3] = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];

        fn config(min_delta: u32) -> String {
            serde_json::json!({"plugins": [
                {"type": "approx-prefix-cache-producer", "parameters": {"autoTune": false}},
                {"type": "prefix-cache-scorer"},
                {"type": "queue-scorer"},
                {"type": "p2p-source-producer", "parameters": {
                    "prefixMatchInfoProducerName": "approx-prefix-cache-producer",
                    "minCachedTokenDelta": min_delta}}],
             "schedulingProfiles": [{"name": "default", "plugins": [
                {"pluginRef": "prefix-cache-scorer", "weight": 1},
                {"pluginRef": "queue-scorer", "weight": 3}]}]})
            .to_string()
        }

        /// The pool with every queue empty.
        fn router(config: &str) -> Router {
            let r = crate::scheduling::router::tests::router(config, &ADDRESSES);
            for a in ADDRESSES {
                waiting(&r, a, 0);
            }
            r
        }

        fn waiting(r: &Router, address: &str, n: u32) {
            let text = format!("vllm:num_requests_waiting {n}\nvllm:kv_cache_usage_perc 0.1\n");
            assert!(r.ingest_metrics(address, &text, Engine::Vllm));
        }

        /// Five 64-token blocks of estimated tokens (4 bytes each).
        fn body(text: &str) -> Vec<u8> {
            let prompt = text.repeat(1280 / text.len());
            serde_json::json!({"model": "m", "prompt": prompt})
                .to_string()
                .into_bytes()
        }

        fn explain(r: &Router, body: &[u8], request_id: &str) -> Decision {
            let headers = vec![("x-request-id".to_owned(), request_id.to_owned())];
            let options = RouteOptions {
                headers: &headers,
                ..Default::default()
            };
            r.explain(PATH, body, &options).unwrap().0
        }

        fn source(d: &Decision) -> Option<&str> {
            d.headers
                .iter()
                .find(|(k, _)| k == KV_CACHE_SOURCE_HEADER)
                .map(|(_, v)| v.as_str())
        }

        #[test]
        fn a_peer_holding_the_prefix_is_named_when_the_pick_lacks_it() {
            let r = router(&config(64));
            let prompt = body("shared system prompt ");
            let first = r.route(PATH, &prompt, None, None).unwrap();
            r.release(first.primary());
            // Nothing was cached anywhere before: no source, and an inbound value is stripped.
            assert_eq!(source(&first), None);
            assert_eq!(first.removed_headers(), [KV_CACHE_SOURCE_HEADER]);
            // The holder's queue is deep: the request goes elsewhere and pulls from the holder.
            waiting(&r, first.primary(), 10);
            let second = explain(&r, &prompt, "r1");
            assert_ne!(second.primary(), first.primary());
            assert_eq!(source(&second), Some(first.primary()));
            assert!(second.removed_headers().is_empty());
            // A prompt nobody holds names no source.
            let other = explain(&r, &body("unrelated words "), "r1");
            assert_eq!(source(&other), None);
        }

        #[test]
        fn pulls_of_a_prefix_held_twice_spread_over_both_holders_by_request_id() {
            let r = router(&config(64));
            let prompt = body("shared system prompt ");
            let mut holders = Vec::new();
            for _ in 0..2 {
                let d = r.route(PATH, &prompt, None, None).unwrap();
                r.release(d.primary());
                waiting(&r, d.primary(), 10);
                holders.push(d.primary().to_owned());
            }
            assert_ne!(holders[0], holders[1]);
            let mut named = std::collections::BTreeSet::new();
            for i in 0..40 {
                let d = explain(&r, &prompt, &format!("req-{i}"));
                assert!(!holders.contains(&d.primary().to_owned()));
                named.insert(source(&d).unwrap().to_owned());
                // The same request id draws the same peer.
                assert_eq!(
                    source(&explain(&r, &prompt, &format!("req-{i}"))),
                    source(&d)
                );
            }
            holders.sort();
            assert_eq!(named.into_iter().collect::<Vec<_>>(), holders);
        }

        #[test]
        fn without_a_listed_prefix_producer_the_default_one_learns_where_requests_went() {
            let config =
                r#"{"plugins": [{"type": "queue-scorer"}, {"type": "p2p-source-producer"}]}"#;
            let r = router(config);
            let prompt = body("shared system prompt ");
            let first = r.route(PATH, &prompt, None, None).unwrap();
            waiting(&r, first.primary(), 10);
            let second = explain(&r, &prompt, "r1");
            assert_ne!(second.primary(), first.primary());
            assert_eq!(source(&second), Some(first.primary()));
        }

        #[test]
        fn with_disaggregation_the_prefill_pick_is_the_one_that_must_lack_the_prefix() {
            use crate::datalayer::EndpointSpec;
            let config = r#"{"plugins": [
                {"type": "prefill-filter"}, {"type": "decode-filter"},
                {"type": "prefix-cache-scorer"}, {"type": "queue-scorer"},
                {"type": "always-disagg-pd-decider"},
                {"type": "disagg-profile-handler",
                 "parameters": {"deciders": {"prefill": "always-disagg-pd-decider"}}},
                {"type": "p2p-source-producer"}],
             "schedulingProfiles": [
                {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"},
                    {"pluginRef": "prefix-cache-scorer", "weight": 1},
                    {"pluginRef": "queue-scorer", "weight": 3}]},
                {"name": "decode", "plugins": [{"pluginRef": "decode-filter"},
                    {"pluginRef": "prefix-cache-scorer", "weight": 1},
                    {"pluginRef": "queue-scorer", "weight": 3}]}]}"#;
            let r = Router::from_json(config).unwrap();
            let role = |address: &str, role: &str| EndpointSpec {
                name: address.to_owned(),
                address: address.to_owned(),
                labels: vec![("llm-d.ai/role".to_owned(), role.to_owned())],
            };
            r.set_endpoints(&[
                role(ADDRESSES[0], "prefill"),
                role(ADDRESSES[1], "prefill"),
                role(ADDRESSES[2], "decode"),
            ]);
            for a in ADDRESSES {
                waiting(&r, a, 0);
            }
            let prompt = body("shared system prompt ");
            let first = r.route(PATH, &prompt, None, None).unwrap();
            let prefiller = |d: &Decision| {
                let (_, v) = d
                    .headers
                    .iter()
                    .find(|(k, _)| k == "x-prefiller-host-port")
                    .unwrap();
                v.clone()
            };
            let holder = prefiller(&first);
            // The decode endpoint holds the prompt too, but the next prefill runs elsewhere.
            waiting(&r, &holder, 10);
            let second = explain(&r, &prompt, "r1");
            assert_eq!(second.primary(), ADDRESSES[2]);
            assert_ne!(prefiller(&second), holder);
            let named = source(&second).unwrap();
            assert!(named == holder || named == ADDRESSES[2], "{named}");
        }

        #[test]
        fn a_source_not_ahead_by_min_cached_token_delta_is_not_named() {
            let r = router(&config(321)); // the whole prompt is 320 tokens
            let prompt = body("shared system prompt ");
            let first = r.route(PATH, &prompt, None, None).unwrap();
            waiting(&r, first.primary(), 10);
            let second = explain(&r, &prompt, "r1");
            assert_ne!(second.primary(), first.primary());
            assert_eq!(source(&second), None);
        }
    }
}
