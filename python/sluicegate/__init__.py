"""sluicegate: an Endpoint Picker for LLM inference gateways (ext_proc, Rust core)."""

__version__ = "0.1.0"
