//! Endpoint state: metrics parsing, the endpoint store and its snapshots, the scraper.
