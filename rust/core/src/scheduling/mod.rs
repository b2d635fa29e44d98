//! Scheduling: filters -> weighted scorers -> picker over an immutable endpoint snapshot.
