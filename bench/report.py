"""The suite's result as a table (stdout) and a PNG plot: throughput and p99 latency vs concurrency,
one line per system, the floor as a dashed line."""

from __future__ import annotations

from pathlib import Path

# What "throughput" means per workload: tokens for the compute-bound ones, RPCs where overhead dominates.
THROUGHPUT = {
    "mixed": ("tokens_per_s", "tokens/s"),
    "rank": ("inputs_per_s", "candidates/s"),
    "tiny": ("requests_per_s", "RPC/s"),
}


def table(results: dict) -> str:
    lines = [
        f"{'workload':8} {'system':12} {'C':>4} {'req/s':>8} {'inputs/s':>9} {'tokens/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'batch':>6} {'pad eff':>7} {'client cores':>12}"
    ]
    for name, entry in results["workloads"].items():
        floor = entry.get("floor")
        if floor:
            lines.append(
                f"{name:8} {'floor':12} {'':>4} {'':>8} {floor['inputs_per_s']:9.1f} "
                f"{floor['tokens_per_s']:9.0f}   best shape: {floor['best_shape']}; "
                f"server max_batch_tokens: {entry['server_max_batch_tokens']}"
            )
        for system, runs in entry["systems"].items():
            for r in runs:
                batching = r.get("batching", {})
                size, efficiency = (
                    batching.get("mean_batch_size", float("nan")),
                    batching.get("padding_efficiency", float("nan")),
                )
                lines.append(
                    f"{name:8} {system:12} {r['concurrency']:4d} {r['requests_per_s']:8.1f} "
                    f"{r['inputs_per_s']:9.1f} {r['tokens_per_s']:9.0f} {r['latency_p50_ms']:8.1f} "
                    f"{r['latency_p99_ms']:8.1f} {size:6.1f} {efficiency:7.2f} "
                    f"{r.get('client_cores', float('nan')):12.2f}"
                )
        paired = entry.get("paired")
        if paired:
            lines.append(
                f"{name:8} server / {paired['reference']} at C={paired['concurrency']}, pairs back to back: "
                + ", ".join(
                    f"{p['server']:.0f} / {p['reference']:.0f} = {p['ratio']:.2f}" for p in paired["pairs"]
                )
                + f"; median {paired['median_ratio']:.2f}"
            )
    lines += [f"{key}: {value:.2f}" for key, value in results.get("summary", {}).items()]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["workloads"])
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7.5), squeeze=False)
    for column, name in enumerate(names):
        entry = results["workloads"][name]
        key, unit = THROUGHPUT[name]
        top, bottom = axes[0][column], axes[1][column]
        for system, runs in entry["systems"].items():
            xs = [r["concurrency"] for r in runs]
            top.plot(xs, [r[key] for r in runs], marker="o", label=system)
            bottom.plot(xs, [r["latency_p99_ms"] for r in runs], marker="o", label=system)
        floor = entry.get("floor")
        if floor:
            floor_value = floor["tokens_per_s"] if key == "tokens_per_s" else floor["inputs_per_s"]
            top.axhline(floor_value, linestyle="--", color="black", label=f"floor ({floor['best_shape']})")
        top.set_title(f"{name}: {entry['requests']} requests, {entry['inputs_per_request']} input(s) each")
        top.set_ylabel(unit)
        bottom.set_ylabel("p99 latency, ms")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.set_xticks(sorted({r["concurrency"] for runs in entry["systems"].values() for r in runs}))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.grid(alpha=0.3)
        top.set_ylim(bottom=0)
        top.legend(fontsize=8)
    fig.suptitle(results.get("title", "reward-server benchmark"))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
