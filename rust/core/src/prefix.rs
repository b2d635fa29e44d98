//! Prefix block hashing and the per-endpoint index of blocks routed there.
