//! The optimizer's sizing kernel: the "step" queueing model of one model-server replica and
//! the bisection for the largest request rate it carries within its SLOs. The Python
//! reference (`sluicegate.optimizer.queueing` / `.sizing`, numpy) defines the formulation and
//! documents it; this is the same arithmetic one option at a time, without numpy's per-call
//! cost, and is tested against it to 1e-9 relative.

mod bisect;
mod step;

pub use bisect::{max_rate_rps, BISECTION_ROUNDS};
pub use step::{Metrics, StepModel};
