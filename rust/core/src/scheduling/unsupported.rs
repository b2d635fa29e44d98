//! Upstream plugin types that sluicegate does not run, each with the reason. A config naming one
//! is refused with that reason at load time: never accepted and then ignored.

pub const UNSUPPORTED: &[(&str, &str)] = &[];

/// The reason a known upstream type is refused, if it is one.
pub fn reason(kind: &str) -> Option<&'static str> {
    UNSUPPORTED
        .iter()
        .find(|(t, _)| *t == kind)
        .map(|(_, r)| *r)
}
