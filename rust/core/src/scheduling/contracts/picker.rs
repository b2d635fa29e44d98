//! The picker contract: choose up to N candidates from their weighted totals, best first.

pub trait Picker: Send + Sync {
    /// Fill `picked` with candidates, the primary first. `candidates` and `totals` are parallel
    /// and non-empty; both may be reordered. A total is the weighted sum of the candidate's
    /// scores over the sum of the weights (0 to 1), so a tolerance means the same whatever the
    /// weights add up to.
    fn pick(&self, candidates: &mut [u32], totals: &mut [f64], picked: &mut Vec<u32>);
    fn max_endpoints(&self) -> usize;
}

/// Shuffle `candidates` and `totals` together (Fisher-Yates), so later stable choices break
/// ties at random.
pub fn shuffle_together(candidates: &mut [u32], totals: &mut [f64]) {
    for i in (1..candidates.len()).rev() {
        let j = fastrand::usize(..=i);
        candidates.swap(i, j);
        totals.swap(i, j);
    }
}
