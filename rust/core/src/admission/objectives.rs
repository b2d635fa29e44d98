//! InferenceObjective name → priority. Absent or unknown objectives have priority 0; a
//! negative priority marks the request sheddable (upstream's legacy admission).

use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objectives(HashMap<String, i32>);

impl Objectives {
    pub fn new(priorities: impl IntoIterator<Item = (String, i32)>) -> Objectives {
        Objectives(priorities.into_iter().collect())
    }

    pub fn priority_of(&self, objective: &str) -> i32 {
        if objective.is_empty() {
            return 0;
        }
        self.0.get(objective).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
