"""Command-line face of the simulator: the flags of `sluicegate sim` and the coroutine that
starts `--count` servers, prints their addresses and serves until cancelled."""

from __future__ import annotations

import argparse
import asyncio
import sys

from sluicegate.sim.config import SimConfig
from sluicegate.sim.server import SimServer

_DEFAULTS = SimConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--count", type=int, default=1, help="number of servers to start (default 1)")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0,
        help="port of the first server, the others on consecutive ports; 0 picks free ports")
    add("--name", default="", help="x-sim-endpoint prefix (servers get NAME-i); default host:port")
    add("--model", default=_DEFAULTS.model)
    add("--loras", default=",".join(_DEFAULTS.loras), help="comma-separated adapter names")
    for flag, field in (("--max-loras", "max_loras"), ("--max-num-seqs", "max_num_seqs"),
                        ("--max-num-batched-tokens", "max_num_batched_tokens"),
                        ("--kv-blocks", "kv_blocks"), ("--block-size", "block_size"),
                        ("--max-model-len", "max_model_len"),
                        ("--default-output-tokens", "default_output_tokens"),
                        ("--max-output-tokens", "max_output_tokens"), ("--seed", "seed")):
        add(flag, type=int, default=getattr(_DEFAULTS, field))
    add("--kv-events-endpoint", default="",
        help='ZMQ endpoint of each server\'s KV-event publisher: with a wildcard it binds, e.g. '
             '"tcp://127.0.0.1:*" (free ports; printed after each address as kv=URL); without one '
             'it dials an EPP\'s bound endpoint, e.g. "tcp://127.0.0.1:5557" (topic '
             'kv@<address>@<model>, as llm-d expects); default: no events')
    add("--kv-events-topic", default="")
    add("--kv-events-replay-endpoint", default="",
        help='ZMQ ROUTER endpoint where each server answers replay requests for its last KV-event '
             'batches, as vLLM\'s replay_endpoint, e.g. "tcp://127.0.0.1:*"; default: no replay')
    add("--kv-events-loss", type=float, default=_DEFAULTS.kv_events_loss,
        help="fault: the fraction of KV-event batches not sent live (still kept for replay)")
    add("--kv-sliding-window", type=int, default=_DEFAULTS.kv_sliding_window,
        help="publish a hybrid model's KV events: a sliding-window group of this many tokens beside "
             "the full-attention one (vLLM's group_idx, kv_cache_spec_kind); default 0: one group")
    add("--kv-events-encoding", default=_DEFAULTS.kv_events_encoding, choices=("array", "map"),
        help="vLLM's event wire form: msgspec arrays (older) or named-field maps (newer)")
    add("--tokenizer", default="",
        help="a local tokenizer.json or model directory: tokenize as vLLM does, publish vLLM's "
             "sha256_cbor block hashes with token ids, serve /v1/*/render and /tokenize")
    add("--hash-seed", default=_DEFAULTS.hash_seed, help="vLLM's PYTHONHASHSEED for block hashes")
    for flag, field in (("--alpha-ms", "alpha_ms"), ("--beta-ms", "beta_ms"),
                        ("--gamma-ms", "gamma_ms"), ("--delta-ms", "delta_ms"),
                        ("--lora-load-ms", "lora_load_ms"), ("--speedup", "speedup"),
                        ("--fail-rate", "fail_rate")):
        add(flag, type=float, default=getattr(_DEFAULTS, field))


def configs_from_args(args: argparse.Namespace) -> list[SimConfig]:
    """One config per server; each gets its own name and seed so replicas differ reproducibly."""
    if args.count < 1:
        raise SystemExit(f"--count must be >= 1, got {args.count}")
    loras = tuple(name.strip() for name in args.loras.split(",") if name.strip())
    return [SimConfig(
        name=f"{args.name}-{i}" if args.name else "", model=args.model, loras=loras,
        max_loras=args.max_loras, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, kv_blocks=args.kv_blocks,
        block_size=args.block_size, max_model_len=args.max_model_len,
        alpha_ms=args.alpha_ms, beta_ms=args.beta_ms, gamma_ms=args.gamma_ms,
        delta_ms=args.delta_ms, lora_load_ms=args.lora_load_ms, speedup=args.speedup,
        seed=args.seed + i, default_output_tokens=args.default_output_tokens,
        max_output_tokens=args.max_output_tokens, fail_rate=args.fail_rate,
        kv_events_endpoint=args.kv_events_endpoint, kv_events_topic=args.kv_events_topic,
        kv_events_encoding=args.kv_events_encoding, kv_events_replay_endpoint=args.kv_events_replay_endpoint,
        kv_events_loss=args.kv_events_loss, kv_sliding_window=args.kv_sliding_window,
        tokenizer=args.tokenizer, hash_seed=args.hash_seed,
    ) for i in range(args.count)]


async def start_servers(configs: list[SimConfig], host: str = "127.0.0.1",
                        first_port: int = 0) -> list[SimServer]:
    """Start one server per config (ports first_port+i, or free ports when 0); on failure the
    ones already started are stopped."""
    servers: list[SimServer] = []
    try:
        for i, config in enumerate(configs):
            server = SimServer(config)
            await server.start(host, first_port + i if first_port else 0)
            servers.append(server)
    except BaseException:
        await stop_servers(servers)
        raise
    return servers


async def stop_servers(servers: list[SimServer]) -> None:
    for server in servers:
        await server.stop()


async def run_from_args(args: argparse.Namespace) -> None:
    servers = await start_servers(configs_from_args(args), args.host, args.port)
    try:
        for server in servers:
            kv = server.kv_events_address
            replay = f" replay={server.kv_events_replay_address}" if server.kv_events_replay_address else ""
            print(server.address if kv is None else f"{server.address} kv={kv}{replay}", flush=True)
        await asyncio.Event().wait()  # serve until the caller cancels us
    finally:
        await stop_servers(servers)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m sluicegate.sim", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        uvloop.run(run_from_args(args))
    except KeyboardInterrupt:
        sys.exit(0)
