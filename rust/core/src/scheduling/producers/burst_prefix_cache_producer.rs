//! burst-prefix-cache-producer: places a burst of prompt-sharing requests (an RL rollout's `n`
//! samples of one prompt, say) together while every prefix cache is still cold, so the shared
//! prefix is prefilled once. Requests arriving within `windowDurationMs` are assigned jointly,
//! as upstream: identical prompts (same chained blocks of `blockSizeTokens` estimated tokens)
//! form a group kept on one replica up to `maxPerReplica`, then spilled to the least loaded;
//! with `minColocateBlocks` > 0 a lone request sharing that many leading blocks with another
//! becomes a unit too and prefers a replica holding such a prefix while that replica is under
//! its fair share; longer prefixes are placed first; `balanceBy` balances request counts or
//! prefix blocks (a replica is charged only the blocks it does not hold yet). A request overlapping
//! no other gets no affinity. `prefix-cache-scorer` reads it (`prefixMatchInfoProducerName`):
//! a full match on the assigned replica, none elsewhere.
//!
//! The window is waited for before the scheduling cycle: the ext_proc server awaits it on the
//! stream's task, other callers block their own thread; a timer thread seals each window.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::prefix::prompt_block_hashes;
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::producers::approx_prefix_cache_producer::BYTES_PER_TOKEN;

const MAX_WINDOW_MS: i64 = 10_000;
/// Leading blocks that form a group key when `maxPrefixTokensToMatch` is 0.
const DEFAULT_MAX_BLOCKS: usize = 2048;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct BurstParams {
    window_duration_ms: i64,
    max_per_replica: i64,
    block_size_tokens: i64,
    max_prefix_tokens_to_match: i64,
    min_colocate_blocks: i64,
    max_batch_size: i64,
    balance_by: String,
}

impl Default for BurstParams {
    fn default() -> Self {
        BurstParams {
            window_duration_ms: 100,
            max_per_replica: -1,
            block_size_tokens: 64,
            max_prefix_tokens_to_match: 0,
            min_colocate_blocks: 0,
            max_batch_size: 1000,
            balance_by: "requests".into(),
        }
    }
}

/// A replica a window may place requests on.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: u64,
    /// Ties break by fewer running requests, then by name (upstream's order).
    pub name: String,
    pub running: u32,
}

/// A request waiting for its window: the replica it is steered to (None: no affinity) arrives
/// when the window seals.
pub type Ticket = oneshot::Receiver<Option<u64>>;

struct Entry {
    hashes: Vec<u64>,
    replicas: Arc<[Replica]>,
    reply: oneshot::Sender<Option<u64>>,
}

#[derive(Default)]
struct Windows {
    open: Vec<Entry>,
    /// The timer thread, started by the first request.
    timer: Option<mpsc::Sender<Instant>>,
}

pub struct BurstPrefixProducer {
    window: Duration,
    /// None: a group may all go to one replica.
    max_per_replica: Option<usize>,
    block_tokens: usize,
    max_blocks: usize,
    min_colocate: usize,
    max_batch: Option<usize>,
    by_tokens: bool,
    windows: Arc<Mutex<Windows>>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: BurstParams = p.parse()?;
    let producer = BurstPrefixProducer::new(params).map_err(|e| p.error(e))?;
    Ok(Plugin::BurstProducer(Arc::new(producer)))
}

/// -1 (unlimited) or >= 1.
fn limit(value: i64, field: &str) -> Result<Option<usize>, String> {
    match value {
        -1 => Ok(None),
        v if v >= 1 => Ok(Some(v as usize)),
        v => Err(format!(
            "parameters.{field}: must be -1 (unlimited) or >= 1, got {v}"
        )),
    }
}

impl BurstPrefixProducer {
    fn new(p: BurstParams) -> Result<Self, String> {
        if !(1..=MAX_WINDOW_MS).contains(&p.window_duration_ms) {
            return Err(format!(
                "parameters.windowDurationMs: must be in 1..={MAX_WINDOW_MS}, got {}",
                p.window_duration_ms
            ));
        }
        if p.block_size_tokens <= 0 {
            return Err(format!(
                "parameters.blockSizeTokens: must be > 0, got {}",
                p.block_size_tokens
            ));
        }
        let max_blocks = match p.max_prefix_tokens_to_match {
            0 => DEFAULT_MAX_BLOCKS,
            t if t >= p.block_size_tokens => (t / p.block_size_tokens) as usize,
            t => {
                return Err(format!(
                "parameters.maxPrefixTokensToMatch: must be 0 or >= blockSizeTokens ({}), got {t}",
                p.block_size_tokens
            ))
            }
        };
        if p.min_colocate_blocks < 0 {
            return Err(format!(
                "parameters.minColocateBlocks: must be >= 0, got {}",
                p.min_colocate_blocks
            ));
        }
        let by_tokens = match p.balance_by.as_str() {
            "" | "requests" => false,
            "tokens" => true,
            other => {
                return Err(format!(
                    "parameters.balanceBy: must be \"requests\" or \"tokens\", got {other:?}"
                ))
            }
        };
        Ok(BurstPrefixProducer {
            window: Duration::from_millis(p.window_duration_ms as u64),
            max_per_replica: limit(p.max_per_replica, "maxPerReplica")?,
            block_tokens: p.block_size_tokens as usize,
            max_blocks,
            min_colocate: p.min_colocate_blocks as usize,
            max_batch: limit(p.max_batch_size, "maxBatchSize")?,
            by_tokens,
            windows: Arc::default(),
        })
    }

    /// The request's chained prefix blocks, at `blockSizeTokens` estimated tokens each.
    pub fn hashes(&self, model: &str, cache_salt: Option<&str>, prompt: &[u8]) -> Vec<u64> {
        prompt_block_hashes(
            model,
            cache_salt,
            prompt,
            self.block_tokens * BYTES_PER_TOKEN,
            self.max_blocks,
        )
    }

    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// Join the open window (opening one when none is); the ticket resolves when it seals. An
    /// error when the window holds `maxBatchSize` requests already (upstream then routes the
    /// request without this producer's data).
    pub fn join(&self, hashes: Vec<u64>, replicas: Arc<[Replica]>) -> Result<Ticket, String> {
        let (reply, ticket) = oneshot::channel();
        let mut w = self.windows.lock();
        if w.open.is_empty() {
            let deadline = Instant::now() + self.window;
            let timer = match w.timer.take() {
                Some(t) => t,
                None => self
                    .start_timer()
                    .map_err(|e| format!("timer thread: {e}"))?,
            };
            let _ = timer.send(deadline);
            w.timer = Some(timer);
        } else if self.max_batch.is_some_and(|max| w.open.len() >= max) {
            return Err(format!(
                "burst prefix batch full: maxBatchSize {} reached",
                self.max_batch.unwrap_or_default()
            ));
        }
        w.open.push(Entry {
            hashes,
            replicas,
            reply,
        });
        Ok(ticket)
    }

    /// Wait for a ticket on this thread (not from inside an async runtime).
    pub fn wait(ticket: Ticket) -> Option<u64> {
        ticket.blocking_recv().ok().flatten()
    }

    /// One thread per producer seals each window at its deadline; it ends with the producer
    /// (its channel closes) once the window it sleeps on has sealed.
    fn start_timer(&self) -> std::io::Result<mpsc::Sender<Instant>> {
        let (tx, rx) = mpsc::channel::<Instant>();
        let windows = Arc::downgrade(&self.windows);
        let placer = Placer {
            k: self.max_per_replica,
            min_colocate: self.min_colocate,
            by_tokens: self.by_tokens,
        };
        std::thread::Builder::new()
            .name("burst-window".into())
            .spawn(move || {
                while let Ok(deadline) = rx.recv() {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    let Some(windows) = windows.upgrade() else {
                        return;
                    };
                    let entries = std::mem::take(&mut windows.lock().open);
                    placer.seal(entries);
                }
            })?;
        Ok(tx)
    }
}

/// The joint assignment of one window (upstream's assign).
#[derive(Clone, Copy)]
struct Placer {
    k: Option<usize>,
    min_colocate: usize,
    by_tokens: bool,
}

/// One placement unit: an identical group, or a lone request sharing a prefix.
struct Unit {
    members: Vec<usize>,
    blocks: usize,
}

impl Placer {
    fn seal(&self, entries: Vec<Entry>) {
        let hashes: Vec<&[u64]> = entries.iter().map(|e| e.hashes.as_slice()).collect();
        let replicas = entries
            .iter()
            .find(|e| !e.hashes.is_empty())
            .map(|e| e.replicas.clone());
        let assigned = match replicas {
            Some(r) => self.assign(&hashes, &r),
            None => vec![None; entries.len()],
        };
        for (e, a) in entries.into_iter().zip(assigned) {
            let _ = e.reply.send(a);
        }
    }

    /// The replica (its id) each request goes to; None for no affinity.
    fn assign(&self, hashes: &[&[u64]], replicas: &[Replica]) -> Vec<Option<u64>> {
        let mut assigned = vec![None; hashes.len()];
        if replicas.is_empty() {
            return assigned;
        }
        // Identical prompts group together, in order of first arrival.
        let mut order: Vec<Vec<usize>> = Vec::new();
        let mut by_key: HashMap<&[u64], usize> = HashMap::new();
        for (i, h) in hashes.iter().enumerate().filter(|(_, h)| !h.is_empty()) {
            let at = *by_key.entry(*h).or_insert_with(|| {
                order.push(Vec::new());
                order.len() - 1
            });
            order[at].push(i);
        }
        let shared = self.shared_prefixes(hashes, &order);
        let (mut groups, mut singles): (Vec<Unit>, Vec<Unit>) = (Vec::new(), Vec::new());
        for (g, members) in order.into_iter().enumerate() {
            let unit = Unit {
                blocks: hashes[members[0]].len(),
                members,
            };
            if unit.members.len() >= 2 {
                groups.push(unit);
            } else if shared.contains(&g) {
                singles.push(unit);
            }
        }
        // Longest prefix first within each tier (stable): shorter units then match against
        // the most blocks already placed.
        groups.sort_by_key(|u| std::cmp::Reverse(u.blocks));
        singles.sort_by_key(|u| std::cmp::Reverse(u.blocks));
        let total: usize = groups
            .iter()
            .chain(&singles)
            .map(|u| {
                if self.by_tokens {
                    u.blocks
                } else {
                    u.members.len()
                }
            })
            .sum();
        let fair_share = total.div_ceil(replicas.len());
        let mut state = Placement {
            load: vec![0; replicas.len()],
            holders: HashMap::new(),
        };
        for unit in groups.iter().chain(&singles) {
            self.place(
                unit,
                hashes,
                replicas,
                fair_share,
                &mut state,
                &mut assigned,
            );
        }
        assigned
    }

    /// The groups (by position in `order`) whose first `minColocateBlocks` blocks some other
    /// request of the window shares.
    fn shared_prefixes(&self, hashes: &[&[u64]], order: &[Vec<usize>]) -> Vec<usize> {
        if self.min_colocate == 0 {
            return Vec::new();
        }
        let mut count: HashMap<&[u64], usize> = HashMap::new();
        let sig = |g: &Vec<usize>| {
            let h = hashes[g[0]];
            (h.len() >= self.min_colocate).then(|| &h[..self.min_colocate])
        };
        for g in order {
            if let Some(s) = sig(g) {
                *count.entry(s).or_default() += g.len();
            }
        }
        (0..order.len())
            .filter(|&g| sig(&order[g]).is_some_and(|s| count[s] >= 2))
            .collect()
    }

    fn place(
        &self,
        unit: &Unit,
        hashes: &[&[u64]],
        replicas: &[Replica],
        fair_share: usize,
        state: &mut Placement,
        assigned: &mut [Option<u64>],
    ) {
        let prefix = hashes[unit.members[0]];
        let matches = state.longest_prefix(prefix, replicas.len());
        let mut per_replica = vec![0usize; replicas.len()];
        let mut prefer_match = self.min_colocate > 0;
        let mut i = 0;
        while i < unit.members.len() {
            let r = self.pick(
                replicas,
                &per_replica,
                &state.load,
                &matches,
                fair_share,
                prefer_match,
            );
            let mut run = unit.members.len() - i;
            if let Some(k) = self.k {
                run = run.min(k.saturating_sub(per_replica[r]).max(1));
            }
            for &m in &unit.members[i..i + run] {
                assigned[m] = Some(replicas[r].id);
            }
            let first_touch = per_replica[r] == 0;
            per_replica[r] += run;
            if !self.by_tokens {
                state.load[r] += run;
            } else if first_touch {
                // The prefix is charged once per replica, less the leading blocks it holds.
                state.load[r] += unit.blocks.saturating_sub(matches[r]);
            }
            i += run;
            prefer_match = false; // only the first replica gets the prefix preference
        }
        for (r, &n) in per_replica.iter().enumerate() {
            if n > 0 {
                for &h in prefix {
                    state.holders.entry(h).or_default().push(r);
                }
            }
        }
    }

    /// The replica for the next run of a unit: with `prefer_match`, the one sharing the longest
    /// prefix (at least `minColocateBlocks`) that has room for the group and is under its fair
    /// share; else the least loaded with room; else the least loaded.
    fn pick(
        &self,
        replicas: &[Replica],
        per_replica: &[usize],
        load: &[usize],
        matches: &[usize],
        fair_share: usize,
        prefer_match: bool,
    ) -> usize {
        let room = |r: usize| self.k.is_none_or(|k| per_replica[r] < k);
        let lighter = |a: usize, b: usize| {
            (load[a], replicas[a].running, &replicas[a].name)
                < (load[b], replicas[b].running, &replicas[b].name)
        };
        if prefer_match {
            let mut best: Option<usize> = None;
            for r in 0..replicas.len() {
                if !room(r) || load[r] >= fair_share || matches[r] < self.min_colocate {
                    continue;
                }
                let better = best.is_none_or(|b| {
                    matches[r] > matches[b] || (matches[r] == matches[b] && lighter(r, b))
                });
                if better {
                    best = Some(r);
                }
            }
            if let Some(b) = best {
                return b;
            }
        }
        let least = |only_room: bool| {
            (0..replicas.len())
                .filter(|&r| !only_room || room(r))
                .reduce(|b, r| if lighter(r, b) { r } else { b })
        };
        least(true).or_else(|| least(false)).unwrap_or(0)
    }
}

/// What a window placed so far: load per replica (requests or blocks) and which replicas hold
/// each block.
struct Placement {
    load: Vec<usize>,
    holders: HashMap<u64, Vec<usize>>,
}

impl Placement {
    /// Per replica, the leading blocks of `prefix` it holds already. A whole prefix is added at
    /// once, so the walk stops at the first block nobody holds.
    fn longest_prefix(&self, prefix: &[u64], replicas: usize) -> Vec<usize> {
        let mut held = vec![0; replicas];
        for h in prefix {
            let Some(holders) = self.holders.get(h) else {
                break;
            };
            let mut seen = vec![false; replicas];
            for &r in holders {
                if !seen[r] {
                    seen[r] = true;
                    held[r] += 1;
                }
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: usize) -> Vec<Replica> {
        (0..n)
            .map(|i| Replica {
                id: i as u64 + 100,
                name: format!("ep{i}"),
                running: 0,
            })
            .collect()
    }

    fn placer(k: Option<usize>, min_colocate: usize, by_tokens: bool) -> Placer {
        Placer {
            k,
            min_colocate,
            by_tokens,
        }
    }

    #[test]
    fn identical_prompts_go_together_and_lone_prompts_get_no_affinity() {
        let (a, b, lone) = (vec![1, 2, 3], vec![7, 8], vec![9]);
        let hashes: Vec<&[u64]> = vec![&a[..], &b[..], &a[..], &lone[..], &b[..], &a[..], &[]];
        let got = placer(None, 0, false).assign(&hashes, &replicas(3));
        assert_eq!(got[0], got[2]);
        assert_eq!(got[0], got[5]);
        assert_eq!(got[1], got[4]);
        assert!(got[0].is_some() && got[1].is_some() && got[0] != got[1]);
        assert_eq!((got[3], got[6]), (None, None));
    }

    #[test]
    fn max_per_replica_spills_a_group_to_the_least_loaded() {
        let a = [1u64, 2];
        let hashes: Vec<&[u64]> = vec![&a[..]; 5];
        let got = placer(Some(2), 0, false).assign(&hashes, &replicas(3));
        let mut per: HashMap<u64, usize> = HashMap::new();
        for g in &got {
            *per.entry(g.unwrap()).or_default() += 1;
        }
        let mut counts: Vec<usize> = per.into_values().collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![1, 2, 2]);
    }

    #[test]
    fn prefix_sharing_singles_join_the_replica_holding_their_prefix_up_to_fair_share() {
        // Two long prompts sharing 2 leading blocks, one group of an unrelated prompt.
        let (p, q, other) = (vec![1u64, 2, 3, 4], vec![1u64, 2, 5], vec![9u64, 10]);
        let hashes: Vec<&[u64]> = vec![&other[..], &other[..], &p[..], &q[..]];
        let got = placer(None, 2, false).assign(&hashes, &replicas(3));
        assert_eq!(got[2], got[3]);
        assert_ne!(got[0], got[2]);
        // Without minColocateBlocks the singles have no affinity.
        let plain = placer(None, 0, false).assign(&hashes, &replicas(3));
        assert_eq!((plain[2], plain[3]), (None, None));
    }

    #[test]
    fn token_balancing_spreads_long_groups() {
        let long: Vec<u64> = (10..40).collect();
        let (short1, short2) = (vec![2u64], vec![3u64]);
        let hashes: Vec<&[u64]> = vec![
            &long[..],
            &long[..],
            &short1[..],
            &short1[..],
            &short2[..],
            &short2[..],
        ];
        // By blocks the 30-block group outweighs both short groups: they share the other replica.
        let got = placer(None, 0, true).assign(&hashes, &replicas(2));
        assert_eq!(got[2], got[4]);
        assert_ne!(got[0], got[2]);
        // By requests the third group joins the long one (two requests each so far, then name).
        let by_requests = placer(None, 0, false).assign(&hashes, &replicas(2));
        assert_eq!(by_requests[0], by_requests[4]);
        assert_ne!(by_requests[2], by_requests[4]);
    }

    #[test]
    fn bad_params_name_the_field() {
        let bad = |json: serde_json::Value| {
            BurstPrefixProducer::new(serde_json::from_value(json).unwrap())
                .err()
                .unwrap()
        };
        assert!(bad(serde_json::json!({"windowDurationMs": 0})).contains("windowDurationMs"));
        assert!(bad(serde_json::json!({"windowDurationMs": 10001})).contains("windowDurationMs"));
        assert!(bad(serde_json::json!({"maxPerReplica": 0})).contains("maxPerReplica"));
        assert!(bad(serde_json::json!({"maxBatchSize": -2})).contains("maxBatchSize"));
        assert!(bad(serde_json::json!({"maxPrefixTokensToMatch": 10}))
            .contains("maxPrefixTokensToMatch"));
        assert!(bad(serde_json::json!({"balanceBy": "bytes"})).contains("balanceBy"));
    }

    #[test]
    fn a_window_seals_once_for_all_its_requests_and_the_next_opens_afresh() {
        let p = BurstPrefixProducer::new(
            serde_json::from_value(serde_json::json!({"windowDurationMs": 500, "maxBatchSize": 3}))
                .unwrap(),
        )
        .unwrap();
        let pool: Arc<[Replica]> = replicas(2).into();
        let tickets: Vec<Ticket> = (0..3)
            .map(|_| p.join(vec![1, 2], pool.clone()).unwrap())
            .collect();
        let full = p.join(vec![1, 2], pool.clone()).err().unwrap();
        assert!(full.contains("maxBatchSize 3"), "{full}");
        let got: Vec<Option<u64>> = tickets.into_iter().map(BurstPrefixProducer::wait).collect();
        assert!(
            got[0].is_some() && got.iter().all(|g| *g == got[0]),
            "{got:?}"
        );
        // A request alone in the next window has nothing to share.
        let alone = p.join(vec![1, 2], pool).unwrap();
        assert_eq!(BurstPrefixProducer::wait(alone), None);
    }

    mod through_the_router {
        const CONFIG: &str = r#"{"plugins": [
            {"type": "burst-prefix-cache-producer", "parameters": {"windowDurationMs": 1000}},
            {"type": "prefix-cache-scorer",
             "parameters": {"prefixMatchInfoProducerName": "burst-prefix-cache-producer"}},
            {"type": "max-score-picker"}]}"#;

        fn body(text: &str) -> Vec<u8> {
            let prompt = text.repeat(600 / text.len());
            serde_json::json!({"model": "m", "prompt": prompt})
                .to_string()
                .into_bytes()
        }

        #[test]
        fn concurrent_requests_sharing_a_prompt_land_together_and_groups_spread() {
            let addresses = [
                "10.0.0.1:8000",
                "10.0.0.2:8000",
                "10.0.0.3:8000",
                "10.0.0.4:8000",
            ];
            let r = crate::scheduling::router::tests::router(CONFIG, &addresses);
            let prompts = [
                body("rollout step prompt A "),
                body("rollout step prompt B "),
            ];
            let picked: Vec<(usize, String)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let (r, prompt) = (&r, &prompts[i % 2]);
                        scope.spawn(move || {
                            let d = r.route("/v1/completions", prompt, None, None).unwrap();
                            (i % 2, d.primary().to_owned())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let of = |p: usize| {
                let mut v: Vec<&str> = picked
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, a)| a.as_str())
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let (a, b) = (of(0), of(1));
            assert_eq!((a.len(), b.len()), (1, 1), "{picked:?}");
            assert_ne!(a, b);
        }
    }
}
