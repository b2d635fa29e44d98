//! mm-embeddings-cache-scorer: the share of the request's distinct image, video and audio items
//! an endpoint is thought to hold in its encoder cache, as mm-embeddings-cache-producer tracks
//! them (the one named by `producerName`; unnamed, the producer of upstream's default name, else
//! the one listed, else the scorer's own with the default budget, as upstream creates a default
//! producer). 0 for a request without such items. After the pick the scorer records the items on
//! the primary profile's endpoints (the producer's PreRequest upstream).

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, PrefixProducers, Scorer};
use crate::scheduling::cycle::Cycle;
use crate::scheduling::producers::mm_embeddings_cache_producer::MmEmbeddingsProducer;

/// The name upstream's default producer instance has.
const DEFAULT_PRODUCER: &str = "mm-embeddings-cache-producer";

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct MmScorerParams {
    /// The producer instance to read ("" = the default one).
    producer_name: String,
}

pub struct MmEmbeddingsCacheScorer {
    producer_name: String,
    own: Arc<MmEmbeddingsProducer>,
    linked: OnceLock<Arc<MmEmbeddingsProducer>>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: MmScorerParams = p.parse()?;
    Ok(Plugin::Scorer(Arc::new(MmEmbeddingsCacheScorer {
        producer_name: params.producer_name,
        own: Arc::new(MmEmbeddingsProducer::new(0)),
        linked: OnceLock::new(),
    })))
}

impl MmEmbeddingsCacheScorer {
    fn producer(&self) -> &MmEmbeddingsProducer {
        self.linked.get().unwrap_or(&self.own)
    }
}

impl Scorer for MmEmbeddingsCacheScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let items = cycle.media_items();
        if items.is_empty() {
            out.fill(0.0);
            return;
        }
        let producer = self.producer();
        let total = items.len() as f64;
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let held = producer.matched(cycle.endpoint(c).info.id, &items);
            *slot = held as f64 / total;
        }
    }

    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        let items = cycle.media_items();
        if items.is_empty() {
            return;
        }
        for &e in &picks.primary {
            self.producer().record(cycle.endpoint(e).info.id, &items);
        }
    }

    fn endpoint_removed(&self, id: u64) {
        // A configured producer hears of it from the scheduler itself.
        self.own.remove_endpoint(id);
    }

    fn use_prefix_producers(&self, producers: &PrefixProducers<'_>) -> Result<(), String> {
        let listed = producers.mm;
        let name = self.producer_name.as_str();
        let found = if name.is_empty() {
            match listed.iter().find(|(n, _)| n == DEFAULT_PRODUCER) {
                Some(p) => Some(p),
                None if listed.len() == 1 => listed.first(),
                None => None,
            }
        } else {
            Some(listed.iter().find(|(n, _)| n == name).ok_or_else(|| {
                format!("parameters.producerName: no mm-embeddings-cache-producer named '{name}'")
            })?)
        };
        if let Some((_, p)) = found {
            let _ = self.linked.set(p.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::scheduling::router::Router;

    const PATH: &str = "/v1/chat/completions";
    const ADDRESSES: [&str; 3] = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"];

    fn chat(images: &[&str]) -> Vec<u8> {
        let parts: Vec<serde_json::Value> = images
            .iter()
            .map(|u| serde_json::json!({"type": "image_url", "image_url": {"url": u}}))
            .chain([serde_json::json!({"type": "text", "text": "describe"})])
            .collect();
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": parts}]})
            .to_string()
            .into_bytes()
    }

    fn router(config: &str) -> Router {
        crate::scheduling::router::tests::router(config, &ADDRESSES)
    }

    const CONFIG: &str = r#"{
        "plugins": [
            {"type": "mm-embeddings-cache-producer", "parameters": {"cacheSizeInMBPerServer": 2048}},
            {"type": "mm-embeddings-cache-scorer"},
            {"type": "active-request-scorer"},
            {"type": "max-score-picker"}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "mm-embeddings-cache-scorer", "weight": 4},
            {"pluginRef": "active-request-scorer", "weight": 1},
            {"pluginRef": "max-score-picker"}]}]}"#;

    #[test]
    fn a_repeated_image_goes_back_to_the_endpoint_that_encoded_it() {
        let r = router(CONFIG);
        let first = r
            .route(PATH, &chat(&["https://x/cat.png"]), None, None)
            .unwrap();
        // Other images spread over the other endpoints by in-flight load.
        let second = r
            .route(PATH, &chat(&["https://x/dog.png"]), None, None)
            .unwrap();
        assert_ne!(first.primary(), second.primary());
        for _ in 0..3 {
            let again = r
                .route(PATH, &chat(&["https://x/cat.png"]), None, None)
                .unwrap();
            assert_eq!(again.primary(), first.primary());
        }
        let explained = r
            .explain(
                PATH,
                &chat(&["https://x/cat.png", "https://x/dog.png"]),
                &Default::default(),
            )
            .unwrap()
            .1;
        let (_, _, raw) = &explained[0].scores[0];
        let by_address: Vec<(String, f64)> = explained[0]
            .candidates
            .iter()
            .cloned()
            .zip(raw.iter().copied())
            .collect();
        for (address, score) in by_address {
            let expected = if address == first.primary() || address == second.primary() {
                0.5
            } else {
                0.0
            };
            assert_eq!(score, expected, "{address}");
        }
    }

    #[test]
    fn scoring_and_recording_read_the_items_the_cycle_parsed_once() {
        use crate::scheduling::config::RouterConfig;
        use crate::scheduling::contracts::scorer::Picks;
        use crate::scheduling::scheduler::Scheduler;
        use crate::scheduling::test_pool::{cycle, pool, Ep};

        let s = Scheduler::from_config(&RouterConfig::from_json(CONFIG).unwrap()).unwrap();
        let (_store, snap) = pool(vec![Ep::waiting(0), Ep::waiting(0)]);
        let body = chat(&["https://x/cat.png", "https://x/dog.png"]);
        let mut first = cycle(&snap);
        first.request.body = &body;
        let mut picks = Picks::default();
        s.schedule(&first, &mut picks).unwrap();
        let parsed = first
            .state
            .borrow()
            .media_items
            .clone()
            .expect("parsed in the cycle");
        assert_eq!(parsed.len(), 2);
        // A cycle that holds those items already never reads its body for them: with no body it
        // still goes where the items were recorded (1.0 x 4 outweighs the in-flight count).
        let second = cycle(&snap);
        second.state.borrow_mut().media_items = Some(parsed);
        let mut again = Picks::default();
        s.schedule(&second, &mut again).unwrap();
        assert_eq!(again.primary, picks.primary);
    }

    #[test]
    fn a_request_without_media_scores_zero_everywhere() {
        let r = router(CONFIG);
        r.route(PATH, &chat(&["https://x/cat.png"]), None, None)
            .unwrap();
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let explained = r.explain(PATH, body, &Default::default()).unwrap().1;
        assert!(explained[0].scores[0].2.iter().all(|s| *s == 0.0));
    }

    #[test]
    fn the_scorer_reads_the_producer_it_names_and_refuses_an_unknown_one() {
        let named = r#"{"plugins": [
            {"type": "mm-embeddings-cache-producer", "name": "a"},
            {"type": "mm-embeddings-cache-producer", "name": "b", "parameters": {"cacheSizeInMBPerServer": 2}},
            {"type": "mm-embeddings-cache-scorer", "parameters": {"producerName": "b"}}]}"#;
        let r = router(named);
        let first = r
            .route(PATH, &chat(&["https://x/1.png"]), None, None)
            .unwrap();
        // b remembers one item per endpoint: of two images sent to the same endpoint it keeps
        // one (the default budget, or producer a, would keep both).
        let both = chat(&["https://x/1.png", "https://x/3.png"]);
        let again = r.route(PATH, &both, None, None).unwrap();
        assert_eq!(again.primary(), first.primary());
        let explained = r.explain(PATH, &both, &Default::default()).unwrap().1;
        let at = explained[0]
            .candidates
            .iter()
            .position(|a| a == first.primary())
            .unwrap();
        assert_eq!(explained[0].scores[0].2[at], 0.5);
        let missing = r#"{"plugins": [{"type": "mm-embeddings-cache-scorer",
            "parameters": {"producerName": "nope"}}]}"#;
        let e = Router::from_json(missing).err().unwrap().0;
        assert!(
            e.contains("parameters.producerName") && e.contains("'nope'"),
            "{e}"
        );
    }
}
