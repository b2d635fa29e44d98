//! Test fixture: real snapshots from the endpoint store, with chosen metrics and labels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::datalayer::metrics::LoraInfo;
use crate::datalayer::{EndpointSpec, EndpointStore, MetricsUpdate, Snapshot};
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;
use crate::scheduling::registry;

pub const STALENESS: Duration = Duration::from_secs(2);

/// One endpoint 10.0.0.{i+1}:8000 named ep{i}, scraped now with `update`.
#[derive(Debug, Clone)]
pub struct Ep {
    pub labels: Vec<(String, String)>,
    pub update: MetricsUpdate,
    /// dcgm-extractor's GPUUtilization; None = never extracted.
    pub gpu: Option<f64>,
}

impl Ep {
    pub fn waiting(n: u32) -> Ep {
        Ep::with(MetricsUpdate {
            waiting: Some(n),
            ..Default::default()
        })
    }

    pub fn with(update: MetricsUpdate) -> Ep {
        Ep {
            labels: vec![],
            update,
            gpu: None,
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> Ep {
        self.labels.push((k.into(), v.into()));
        self
    }

    pub fn gpu(mut self, utilization: f64) -> Ep {
        self.gpu = Some(utilization);
        self
    }

    pub fn loras(running: &[&str], waiting: &[&str], max: u32) -> Ep {
        let s = |l: &[&str]| l.iter().map(|x| x.to_string()).collect();
        Ep::with(MetricsUpdate {
            loras: Some(LoraInfo {
                running: s(running),
                waiting: s(waiting),
                max_lora: max,
            }),
            ..Default::default()
        })
    }
}

pub fn pool(eps: Vec<Ep>) -> (EndpointStore, Arc<Snapshot>) {
    let store = EndpointStore::default();
    let specs: Vec<EndpointSpec> = eps
        .iter()
        .enumerate()
        .map(|(i, e)| EndpointSpec {
            name: format!("ep{i}"),
            address: format!("10.0.0.{}:8000", i + 1),
            labels: e.labels.clone(),
        })
        .collect();
    store.set_endpoints(&specs);
    let now = Instant::now();
    for (spec, e) in specs.iter().zip(&eps) {
        store.ingest(&spec.address, &e.update, now);
    }
    let snap = store.snapshot();
    for (ep, e) in snap.endpoints.iter().zip(&eps) {
        if let Some(v) = e.gpu {
            ep.info.attributes.set_gpu_utilization(v);
        }
    }
    (store, snap)
}

pub fn all(c: &Cycle<'_>) -> Vec<u32> {
    (0..c.snapshot.endpoints.len() as u32).collect()
}

pub fn scores(scorer: &dyn Scorer, c: &Cycle<'_>) -> Vec<f64> {
    let candidates = all(c);
    let mut out = vec![f64::NAN; candidates.len()];
    scorer.score(c, &candidates, &mut out);
    out
}

pub fn cycle(snap: &Snapshot) -> Cycle<'_> {
    Cycle::new(snap, Instant::now(), STALENESS)
}

/// A plugin built by the registry from JSON parameters, named after its type.
pub fn built(kind: &str, params: &str) -> Plugin {
    let raw: serde_json::Value = serde_json::from_str(params).unwrap();
    registry::build(&Params {
        name: kind,
        kind,
        raw: Some(&raw),
    })
    .unwrap()
}

pub fn filter_of(kind: &str, params: &str) -> Arc<dyn Filter> {
    match built(kind, params) {
        Plugin::Filter(f) => f,
        _ => panic!("{kind} is not a filter"),
    }
}

pub fn scorer_of(kind: &str, params: &str) -> Arc<dyn Scorer> {
    match built(kind, params) {
        Plugin::Scorer(s) => s,
        _ => panic!("{kind} is not a scorer"),
    }
}

pub fn kept(f: &dyn Filter, eps: Vec<Ep>) -> Vec<u32> {
    let (_store, snap) = pool(eps);
    let c = cycle(&snap);
    let mut candidates = all(&c);
    f.filter(&c, &mut candidates).unwrap();
    candidates
}
