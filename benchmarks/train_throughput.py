"""Training throughput of the MoE model against a dense twin of equal active FLOPs, and MaxVio of
γ-balancing against an auxiliary-loss-only baseline.

    python benchmarks/train_throughput.py [--preset tiny] [--steps 20] [--balance-steps 300]

Throughput: fwd + bwd + AdamW steps of `model.train`'s loss on random tokens, MoE and dense interleaved
in one process (so both see the same machine load); model FLOPs counted as `model.train.flops_per_token`
(6·N_active + 6·L·H·(d_qk + d_v)·S). The dense twin sets n_dense_layers = n_layers with
inter_dim = (n_activated + n_shared)·moe_inter_dim, so each trunk FFN does the work of one token's routed +
shared experts (the MTP block stays MoE in both: the model makes MTP blocks MoE past n_dense_layers).

Balance: two real trainer runs (`python -m model.train`) on byte-level tokens of the project's synthetic
en/zh corpus, same seed and steps: γ = 0.001 with α = 1e-4 (V3) against γ = 0 with α = 1e-2 (a
conventional auxiliary loss). Prints one JSON object; BENCHMARKS.md records the figures.
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

from model.model import Transformer  # noqa: E402
from model.presets import get_preset  # noqa: E402
from model.train import active_params, flops_per_token  # noqa: E402


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
            "fpt": flops_per_token(model, seq_len),
            "times": [],
            "params": active_params(model),
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


def balance(steps: int, tmp: Path) -> dict:
    n_tok = byte_tokens(tmp / "tokens", 600_000)
    variants = {"gamma_0.001_alpha_1e-4": (0.001, 1e-4), "aux_only_gamma_0_alpha_1e-2": (0.0, 1e-2)}
    procs = {}
    for name, (gamma, alpha) in variants.items():
        cfg = {
            "model": {"preset": "tiny", "vocab_size": 257, "max_seq_len": 128},
            "train": {
                "steps": steps,
                "seq_len": 128,
                "global_batch_size": 8,
                "micro_batch_size": 8,
                "warmup_steps": steps // 20,
                "lr": 2e-3,
                "log_every": 5,
                "checkpoint_every": steps,
                "bias_update_speed": gamma,
                "bias_update_stop_frac": 1.0,
                "seq_aux_alpha": alpha,
                "tokens_dir": str(tmp / "tokens"),
            },
        }
        (tmp / f"{name}.json").write_text(json.dumps(cfg))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "model.train", "--config", str(tmp / f"{name}.json"), "--workdir", str(tmp / name)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
    out = {"tokens_in_corpus": n_tok, "steps": steps}
    for name, p in procs.items():
        lines = [json.loads(ln) for ln in p.stdout if ln.startswith("{")]
        p.wait()
        st = [e for e in lines if e["event"] == "step"]
        late = [e for e in st if e["step"] > steps // 2]  # second half: after the biases have moved
        out[name] = {
            "max_vio_mean_2nd_half": round(float(np.mean([e["max_vio_mean"] for e in late])), 4),
            "max_vio_last": round(st[-1]["max_vio_mean"], 4),
            "ce_loss_last5": round(float(np.mean([e["ce_loss"] for e in st[-5:]])), 4),
            "dead_experts_last": sum(v["dead_experts"] for v in st[-1]["moe"].values()),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=None, help="override the preset's vocabulary")
    ap.add_argument("--balance-steps", type=int, default=300, help="0 skips the MaxVio comparison")
    a = ap.parse_args()
    result = {"throughput": throughput(a.preset, a.steps, a.batch, a.seq_len, a.vocab)}
    if a.vocab is None and a.preset == "tiny":  # the 102,400-entry head dominates tiny: also without it
        result["throughput_vocab_4096"] = throughput(a.preset, a.steps, a.batch, a.seq_len, 4096)
    if a.balance_steps:
        with tempfile.TemporaryDirectory() as tmp:
            result["balance"] = balance(a.balance_steps, Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
