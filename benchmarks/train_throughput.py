"""Training throughput of the MoE model against a dense twin of equal active FLOPs, and MaxVio of
γ-balancing against an auxiliary-loss-only baseline.

    python benchmarks/train_throughput.py [--preset tiny] [--steps 20] [--balance-steps 300]
    python benchmarks/train_throughput.py --skip-throughput --balance-steps 2500 [--balance-seed 1]
    python benchmarks/train_throughput.py --skip-throughput --balance-steps 2500 --balance-variants 0:1e-3

Throughput: fwd + bwd + AdamW steps of `model.train`'s loss on random tokens, MoE and dense interleaved
in one process (so both see the same machine load); model FLOPs counted as `model.info.train_flops_per_token`
(6·N_active + 6·L·H·(d_qk + d_v)·S). The dense twin sets n_dense_layers = n_layers with
inter_dim = (n_activated + n_shared)·moe_inter_dim, so each trunk FFN does the work of one token's routed +
shared experts (the MTP block stays MoE in both: the model makes MTP blocks MoE past n_dense_layers).

Balance: real trainer runs (`python -m crawl2score.model.train`, one thread each, all at once) on byte-level tokens
(vocab 257) of the project's synthetic en/zh corpus, `tiny` preset, same seed, data and steps, every step
logged: γ = 0.001 with α = 1e-4 (V3), γ = 0.01 with α = 1e-4 (a bias speed that lets the bias cover the
sigmoid-affinity spread within a short run), against γ = 0 with α = 1e-2 (auxiliary loss only; other
γ:α pairs with --balance-variants). MaxVio (global batch, per MoE layer, mean over layers) is averaged
over the last quarter of the steps, CE over the last 100 steps; the MaxVio a perfectly uniform router
would still show at this batch size (sampling noise) is printed as `max_vio_floor_uniform`.
Prints one JSON object; BENCHMARKS.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crawl2score.model.info import train_active_params, train_flops_per_token  # noqa: E402
from crawl2score.model.model import Transformer  # noqa: E402
from crawl2score.model.presets import get_preset  # noqa: E402


def dense_twin(args):
    return args.replace(
        n_dense_layers=args.n_layers, inter_dim=(args.n_activated_experts + args.n_shared_experts) * args.moe_inter_dim
    )


def throughput(preset: str, steps: int, batch: int, seq_len: int, vocab: int | None) -> dict:
    base = get_preset(preset)
    if vocab:
        base = base.replace(vocab_size=vocab)
    base = base.replace(max_seq_len=max(base.max_seq_len, seq_len))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = {}
    for name, args in (("moe", base), ("dense", dense_twin(base))):
        torch.manual_seed(0)
        with torch.device(device):
            model = Transformer(args)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        runs[name] = {
            "model": model,
            "opt": opt,
            "fpt": train_flops_per_token(args, seq_len),
            "times": [],
            "params": (sum(p.numel() for p in model.parameters()), train_active_params(args)),
        }
    tokens = torch.randint(0, base.vocab_size, (batch, seq_len + 1), device=device)
    use_bf16 = device.type == "cuda"
    for i in range(steps + 2):  # interleaved; the first two steps of each are warm-up
        for r in runs.values():
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = r["model"].loss(tokens[:, :-1], tokens[:, 1:])
            out.loss.backward()
            r["opt"].step()
            r["opt"].zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                r["times"].append(time.perf_counter() - t0)
    out = {}
    for name, r in runs.items():
        t = float(np.median(r["times"]))
        tps = batch * seq_len / t
        out[name] = {
            "tokens_per_s": round(tps, 1),
            "model_tflops": round(r["fpt"] * tps / 1e12, 5),
            "flops_per_token": r["fpt"],
            "params_total": r["params"][0],
            "params_active": int(r["params"][1]),
        }
    out["moe_over_dense"] = round(out["moe"]["tokens_per_s"] / out["dense"]["tokens_per_s"], 3)
    out["config"] = {
        "preset": preset,
        "vocab_size": base.vocab_size,
        "batch": batch,
        "seq_len": seq_len,
        "steps": steps,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    return out


def byte_tokens(out: Path, n_bytes: int) -> int:
    """The synthetic en/zh corpus as UTF-8 bytes, one document per record, EOS = 256."""
    from crawl2score.tokenizer.synthetic import generate_documents

    docs = [
        np.append(np.frombuffer(d["text"].encode(), dtype=np.uint8).astype("<u4"), 256)
        for d in generate_documents(n_bytes, seed=0)
    ]
    flat = np.concatenate(docs).astype("<u4")
    out.mkdir(parents=True, exist_ok=True)
    flat.tofile(out / "shard-00000.bin")
    np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype("<i8").tofile(out / "shard-00000.idx")
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "dtype": "uint32",
                "vocab_size": 257,
                "bos_id": 256,
                "eos_id": 256,
                "pad_id": 256,
                "shards": [
                    {
                        "path": "shard-00000.bin",
                        "index": "shard-00000.idx",
                        "num_tokens": len(flat),
                        "num_docs": len(docs),
                    }
                ],
            }
        )
    )
    return len(flat)


# (γ, α) per run: V3's γ = 0.001; a faster γ for short runs (the bias must travel about the spread of the
# sigmoid affinities, O(0.1–1), within the run: 0.001 needs ~10³ consistently signed steps for that);
# the auxiliary-loss-only baseline at α = 1e-2 (the conventional strength; V3's α = 1e-4 is "extremely small").
BALANCE_VARIANTS = {
    "gamma_0.001_alpha_1e-4": (0.001, 1e-4),
    "gamma_0.01_alpha_1e-4": (0.01, 1e-4),
    "aux_only_gamma_0_alpha_1e-2": (0.0, 1e-2),
}


def max_vio_floor(n_tokens: int, n_experts: int, top_k: int, draws: int = 2000) -> float:
    """Mean MaxVio of one batch when every token picks top_k distinct experts uniformly at random: the
    sampling noise a perfectly balanced router still shows at this batch size."""
    rng = np.random.default_rng(0)
    keys = rng.random((draws, n_tokens, n_experts))
    picks = np.argpartition(keys, top_k, axis=-1)[..., :top_k]
    counts = np.stack([np.bincount(d.ravel(), minlength=n_experts) for d in picks])
    return float(np.mean(counts.max(1) / counts.mean(1) - 1))


def balance(
    steps: int, tmp: Path, seq_len: int = 64, batch: int = 8, lr: float = 2e-3, variants=None, seed: int = 0
) -> dict:
    """Real trainer runs, one thread each, all started at once; every step logged. MaxVio is averaged over
    the last quarter of the steps, CE over the last 100 (or the last tenth, if fewer)."""
    variants = variants or BALANCE_VARIANTS
    n_bytes = max(600_000, int(1.1 * steps * batch * (seq_len + 1)))  # about one epoch: no sequence repeats
    n_tok = byte_tokens(tmp / "tokens", n_bytes)
    procs = {}
    for name, (gamma, alpha) in variants.items():
        cfg = {
            "model": {"preset": "tiny", "vocab_size": 257, "max_seq_len": seq_len},
            "train": {
                "steps": steps,
                "seq_len": seq_len,
                "global_batch_size": batch,
                "micro_batch_size": batch,
                "warmup_steps": max(steps // 20, 1),
                "lr": lr,
                "log_every": 1,
                "checkpoint_every": steps,
                "bias_update_speed": gamma,
                "bias_update_stop_tokens": 14.8e12,  # γ on to the end
                "seq_aux_alpha": alpha,
                "tokens_dir": str(tmp / "tokens"),
                "seed": seed,
            },
        }
        (tmp / f"{name}.json").write_text(json.dumps(cfg))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
        # stdout is not read while the others run (a full pipe would stall them): metrics.jsonl is.
        procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crawl2score.model.train",
                "--config",
                str(tmp / f"{name}.json"),
                "--workdir",
                str(tmp / name),
            ],
            stdout=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
        )
    t0 = time.perf_counter()
    codes = {name: p.wait() for name, p in procs.items()}
    from safetensors.numpy import load_file

    a = get_preset("tiny")
    tokens_per_step = batch * seq_len
    late_from = steps - max(steps // 4, 1)
    ce_n = min(100, max(steps // 10, 1))
    out = {
        "tokens_in_corpus": n_tok,
        "steps": steps,
        "batch": batch,
        "seq_len": seq_len,
        "lr": lr,
        "seed": seed,
        "maxvio_window": f"steps {late_from + 1}-{steps}",
        "ce_window": f"steps {steps - ce_n + 1}-{steps}",
        "max_vio_floor_uniform": round(max_vio_floor(tokens_per_step, a.n_routed_experts, a.n_activated_experts), 4),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    for name, (gamma, alpha) in variants.items():
        if codes[name] != 0:
            out[name] = {"error": f"model.train exited {codes[name]}"}
            continue
        lines = [json.loads(ln) for ln in (tmp / name / "checkpoints" / "metrics.jsonl").read_text().splitlines()]
        st = [e for e in lines if e["event"] == "step"]
        late = [e for e in st if e["step"] > late_from]
        per_layer = {k: round(float(np.mean([e["max_vio"][k] for e in late])), 4) for k in late[-1]["max_vio"]}
        weights = load_file(str(tmp / name / "checkpoints" / f"step-{steps}" / "model.safetensors"))
        biases = [v for k, v in weights.items() if k.endswith("expert_bias")]
        out[name] = {
            "gamma": gamma,
            "alpha": alpha,
            "max_vio_late": round(float(np.mean([e["max_vio_mean"] for e in late])), 4),
            "max_vio_late_per_layer": per_layer,
            "max_vio_by_quarter": [
                round(
                    float(np.mean([e["max_vio_mean"] for e in st if q * steps / 4 < e["step"] <= (q + 1) * steps / 4])),
                    4,
                )
                for q in range(4)
            ],
            "ce_loss_last": round(float(np.mean([e["ce_loss"] for e in st[-ce_n:]])), 4),
            "balance_loss_last": round(float(np.mean([e["balance_loss"] for e in st[-ce_n:]])), 6),
            "dead_experts_late": int(sum(sum(v["dead_experts"] for v in e["moe"].values()) for e in late)),
            "bias_spread_final": round(float(np.mean([b.max() - b.min() for b in biases])), 4),
        }
    base_name = next((n for n, (g, _) in variants.items() if g == 0), None)  # the first auxiliary-loss-only run
    base = out.get(base_name, {})
    for name in variants:
        if name != base_name and "ce_loss_last" in out[name] and "ce_loss_last" in base:
            out[name]["ce_minus_aux_only"] = round(out[name]["ce_loss_last"] - base["ce_loss_last"], 4)
    return out


def parse_variants(spec: str | None) -> dict[str, tuple[float, float]] | None:
    if not spec:
        return None
    out = {}
    for pair in spec.split(","):
        g, a = pair.split(":")
        name = f"aux_only_gamma_0_alpha_{a}" if float(g) == 0 else f"gamma_{g}_alpha_{a}"
        out[name] = (float(g), float(a))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=None, help="override the preset's vocabulary")
    ap.add_argument("--balance-steps", type=int, default=300, help="0 skips the MaxVio comparison")
    ap.add_argument("--balance-seq-len", type=int, default=64)
    ap.add_argument("--balance-batch", type=int, default=8)
    ap.add_argument("--balance-lr", type=float, default=2e-3)
    ap.add_argument(
        "--balance-variants",
        default=None,
        help="comma-separated γ:α pairs, e.g. 0:1e-3,0.01:1e-4 (default: 0.001:1e-4, 0.01:1e-4, 0:1e-2)",
    )
    ap.add_argument("--balance-seed", type=int, default=0, help="initial weights and data order of every run")
    ap.add_argument("--skip-throughput", action="store_true", help="only the MaxVio comparison")
    a = ap.parse_args()
    result = {}
    if not a.skip_throughput:
        result["throughput"] = throughput(a.preset, a.steps, a.batch, a.seq_len, a.vocab)
    if (
        not a.skip_throughput and a.vocab is None and a.preset == "tiny"
    ):  # the 102,400-entry head dominates tiny: also without it
        result["throughput_vocab_4096"] = throughput(a.preset, a.steps, a.batch, a.seq_len, 4096)
    if a.balance_steps:
        with tempfile.TemporaryDirectory() as tmp:
            result["balance"] = balance(
                a.balance_steps,
                Path(tmp),
                a.balance_seq_len,
                a.balance_batch,
                a.balance_lr,
                parse_variants(a.balance_variants),
                a.balance_seed,
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
