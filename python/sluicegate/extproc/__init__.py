"""Wire side of the EPP: the thin façade that configures, starts, drains and stops the Rust
ext_proc server, its flow-control gate, and the protocol names (defined in Rust)."""
