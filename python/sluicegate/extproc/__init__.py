"""Wire side of the EPP: the ext_proc gRPC service, its stream state machine and protocol names."""
