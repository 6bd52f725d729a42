"""The lm-eval model `crawl2score`: a native checkpoint and its tokenizer behind lm-eval's `TemplateLM`.

    lm_eval.simple_evaluate(model="crawl2score", model_args="checkpoint=work/checkpoints,device=cpu", ...)

after `import eval.lm` (the import registers the name). lm-eval 0.4.13 does not read the
`lm_eval.models` entry point, so its own command line cannot find the class by itself: run lm-eval's
command line through `crawl2score eval -- ARGS` or `python -m eval ARGS`, which import this module first.

model_args: `checkpoint` (a step dir, or a checkpoints dir with `latest`), `tokenizer` (default
`<checkpoints>/../tokenizer`, i.e. WORKDIR/tokenizer), `device`, `batch_size`, `max_new_tokens` (cap on
lm-eval's `max_gen_toks`), `seed` (sampling), `dtype` (float32, bfloat16), `speculative` (MTP
self-speculative decoding for greedy requests; same text, fewer main-model passes), `truncate_prompts`
(cut over-long prompts from the left, counted, instead of failing).

Generation budgets never cut the prompt: a request gets min(requested, context - prompt) new tokens
(`plan_budget`). A prompt that leaves no room is an error naming the problem, unless `truncate_prompts`.

Every forward goes through two seams: `_logits` (scoring) and `_generate` (decoding).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from crawl2score.errors import BadInput
from crawl2score.eval.decoding import Generation, decode, until_checker
from crawl2score.model.checkpoint import check_tokenizer_dir, default_tokenizer_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Text that starts another turn in a chat template: generation ends there as it ends at EOS (DeepSeek-V3's
# format closes the assistant turn with EOS and opens the next with `<｜User｜>`).
TURN_STARTS = ("<｜User｜>", "<|im_start|>", "<|start_header_id|>")


class PromptTooLong(BadInput):
    """A prompt that leaves no room for one new token in the model's context."""

    CONFIG_HINT = "set eval.truncate_prompts=true"
    MODEL_ARGS_HINT = "add truncate_prompts=true to --model_args"  # lm-eval's own CLI (`crawl2score eval --`)


@dataclass
class Budget:
    prompt: list[int]  # the ids the model sees
    max_new: int  # new tokens it may add
    requested: int  # what the task asked for
    truncated: bool  # prompt cut from the left (only with truncate_prompts)


def plan_budget(prompt: list[int], requested: int, context: int, *, truncate: bool = False, name: str = "") -> Budget:
    """New tokens = min(requested, context - prompt length); the prompt is never cut silently.

    A prompt with no room left is an error naming the request, or with `truncate` keeps its last
    `context - min(requested, context // 2)` tokens and is marked truncated (the results count it).
    """
    room = context - len(prompt)
    if room >= 1:
        return Budget(list(prompt), min(requested, room), requested, False)
    if not truncate:
        raise PromptTooLong(
            f"{name or 'a request'}: prompt of {len(prompt)} tokens leaves no room in the model's "
            f"{context}-token context ({PromptTooLong.CONFIG_HINT} to cut it from the left, counted)"
        )
    max_new = max(1, min(requested, context // 2))
    return Budget(list(prompt[-(context - max_new) :]), max_new, requested, True)


def _request_name(req: Any) -> str:
    doc = getattr(req, "doc", None)
    pid = doc.get("id") if isinstance(doc, dict) else None
    task = getattr(req, "task_name", None)
    return f"{task or 'request'} problem {pid if pid is not None else getattr(req, 'doc_id', '?')}"


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def request_seed(base: int, context: str, occurrence: int) -> int:
    """A seed per (context, k-th copy of it): stable across runs, batch sizes and request order."""
    blob = f"{base}\0{occurrence}\0{context}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


@register_model("crawl2score")
class Crawl2ScoreLM(TemplateLM):
    def __init__(
        self,
        checkpoint: str | None = None,
        tokenizer: Any = None,
        device: str = "cpu",
        batch_size: int | str = 8,
        max_new_tokens: int | str | None = None,
        seed: int | str = 1234,
        dtype: str | None = None,
        speculative: bool | str = False,
        truncate_prompts: bool | str = False,
        model: torch.nn.Module | None = None,
        **_ignored: Any,  # lm-eval passes max_batch_size etc.
    ) -> None:
        """`model` (and a tokenizer object) instead of `checkpoint`: any built model, e.g. a preset's shape on
        the meta device, whose request plan tests check without weights."""
        super().__init__()
        from transformers import AutoTokenizer

        from crawl2score.model import load_checkpoint
        from crawl2score.model.checkpoint import resolve_checkpoint

        if str(device or "cpu").startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # lm-eval's CLI passes --device cuda by default
        self._device = torch.device(device or "cpu")
        if model is not None:
            self.checkpoint_dir = Path(checkpoint) if checkpoint else None
            self.model = model.eval()
        else:
            if not checkpoint:
                raise ValueError("crawl2score model: give checkpoint=DIR")
            self.checkpoint_dir = resolve_checkpoint(checkpoint)
            self.model = load_checkpoint(
                self.checkpoint_dir, device=self._device, dtype=DTYPES[dtype] if dtype else None
            ).eval()
        if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
            self.tokenizer, self.tokenizer_dir = tokenizer, Path(getattr(tokenizer, "name_or_path", "") or ".")
        else:
            self.tokenizer_dir = Path(tokenizer) if tokenizer else default_tokenizer_dir(checkpoint)
            check_tokenizer_dir(self.tokenizer_dir, "model_args tokenizer= or eval.tokenizer")
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_dir), local_files_only=True)
        self.truncate_prompts = _as_bool(truncate_prompts)
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 8
        self.max_new_tokens = int(max_new_tokens) if max_new_tokens not in (None, "") else None
        self.seed = int(seed)
        self.speculative = _as_bool(speculative)
        self.max_length = self.model.args.max_seq_len
        # Why each generation ended, keyed by (context, text): the stage reads it for hit-limit shares.
        self.finish_reasons: dict[tuple[str, str], list[str]] = defaultdict(list)
        # The settings each generate_until request ran with (tests check the protocol reaches here).
        self.generation_log: list[dict[str, Any]] = []
        # (done, total) generation requests after each batch: the eval task's progress artifact
        self.on_generated: Callable[[int, int], None] | None = None
        self.spec_stats = Counter()

    # ---- lm-eval plumbing -----------------------------------------------------------------------------
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None):
        """`--model_args` win over lm-eval's own `--device`/`--batch_size` (its CLI defaults to cuda)."""
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string or "")
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None):
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Training shards hold documents separated by EOS only (no BOS), so a text starts after an EOS:
        the prefix token (EOS) is prepended unless `add_special_tokens=False`.

        A chat-formatted prompt (it starts with the template's BOS text) is the one place where special
        tokens written as text are meant as special ids; everywhere else they encode as plain bytes, as in
        the training shards.
        """
        bos = self.tokenizer.bos_token
        if bos and string.startswith(bos) and self.chat_template_text:
            return self.tokenizer.encode(string, add_special_tokens=False, split_special_tokens=False)
        ids = self.tokenizer.encode(string, add_special_tokens=False, split_special_tokens=True)
        return ids if add_special_tokens is False else [self.prefix_token_id, *ids]

    # ---- chat -----------------------------------------------------------------------------------------
    @property
    def chat_template_text(self) -> str | None:
        """The tokenizer's chat template (our tokenizer stage writes DeepSeek-V3's), None without one."""
        return getattr(self.tokenizer, "chat_template", None) or None

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer_dir).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.chat_template_text

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def turn_stops(self) -> list[str]:
        """Where an assistant turn ends besides EOS: the text that opens the template's next turn."""
        template = self.chat_template_text or ""
        return [t for t in TURN_STARTS if t in template]

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def get_model_info(self) -> dict[str, Any]:
        return {"model_checkpoint": str(self.checkpoint_dir), "tokenizer": str(self.tokenizer_dir)}

    def _decode_raw(self, tokens: list[int]) -> str:
        """Special tokens kept: the stop check must see `<｜User｜>` where it is a special id."""
        return self.tokenizer.decode(tokens, skip_special_tokens=False)

    # ---- seams ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _logits(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        return self.model(tokens_BT.to(self._device)).float()

    def _generate(self, prompts: list[list[int]], max_new: int, temperature: float, top_p: float, seeds, stop):
        if self.speculative and temperature <= 0:
            from crawl2score.eval.speculative import speculative_decode

            gens, stats = speculative_decode(self.model, prompts, max_new, eos_id=self.eot_token_id, stop=stop)
            self.spec_stats.update(stats)
            return gens
        return decode(
            self.model,
            prompts,
            max_new,
            temperature=temperature,
            top_p=top_p,
            seeds=seeds,
            eos_id=self.eot_token_id,
            stop=stop,
        )

    # ---- loglikelihood --------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), is the continuation the greedy one) per request.

        Context is cut from the left so context + continuation fits max_seq_len (+1 for the shift).
        """
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        bs = self.batch_size
        for start in tqdm(range(0, len(order), bs), disable=disable_tqdm, desc="loglikelihood"):
            idx = order[start : start + bs]
            rows, spans = [], []
            for i in idx:
                _, ctx, cont = requests[i]
                whole = (list(ctx) + list(cont))[-(self.max_length + 1) :]
                inp = whole[:-1]
                rows.append(inp)
                spans.append((len(inp) - len(cont), len(cont), cont))
            T = max(len(r) for r in rows)
            tokens_BT = torch.full((len(rows), T), self.eot_token_id, dtype=torch.long)
            for b, r in enumerate(rows):
                tokens_BT[b, : len(r)] = torch.tensor(r)  # right padding: causal attention never sees it
            logp_BTV = torch.log_softmax(self._logits(tokens_BT), dim=-1).cpu()
            for b, (i, (s, n, cont)) in enumerate(zip(idx, spans, strict=True)):
                lp_NV = logp_BTV[b, s : s + n]
                cont_N = torch.tensor(cont)
                ll = float(lp_NV.gather(-1, cont_N[:, None]).sum())
                greedy = bool((lp_NV.argmax(-1) == cont_N).all())
                results[i] = (ll, greedy)
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scores: the whole text in disjoint windows of max_seq_len tokens."""
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            (string,) = req.args
            windows = [
                ((None, None), *make_disjoint_window(w))
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(string, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            out.append(sum(ll for ll, _ in self._loglikelihood_tokens(windows, disable_tqdm=True)))
        return out

    # ---- generation -----------------------------------------------------------------------------------
    def _settings(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        kw = dict(gen_kwargs or {})
        until = kw.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        eos_text = self.tokenizer.eos_token
        if eos_text and eos_text not in until:
            until.append(eos_text)
        max_new = int(kw.pop("max_gen_toks", kw.pop("max_new_tokens", 256)))
        if self.max_new_tokens is not None:
            max_new = min(max_new, self.max_new_tokens)
        do_sample = _as_bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 0.0) or 0.0)
        top_p = float(kw.pop("top_p", 1.0) or 1.0)
        if not do_sample:
            temperature = 0.0
        return {"until": until, "max_new_tokens": max_new, "temperature": temperature, "top_p": top_p}

    def plan_requests(self, requests) -> list[tuple[int, str, Budget, dict[str, Any], int]]:
        """(index, context, budget, settings, seed) per request: the exact ids and token budget decoded.

        Chat-formatted contexts also stop at the start of another turn.
        """
        seen: Counter[str] = Counter()
        plans = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            s = self._settings(gen_kwargs)
            bos = self.tokenizer.bos_token
            if bos and context.startswith(bos) and self.chat_template_text:
                s["until"] += [t for t in self.turn_stops() if t not in s["until"]]
            occurrence = seen[context]
            seen[context] += 1
            budget = plan_budget(
                self.tok_encode(context),
                s["max_new_tokens"],
                self.max_length,
                truncate=self.truncate_prompts,
                name=_request_name(req),
            )
            s["task"] = getattr(req, "task_name", None)
            plans.append((i, context, budget, s, request_seed(self.seed, context, occurrence)))
        return plans

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Batched by identical settings and budget, longest contexts first; each row stops at `until` or EOS."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list] = defaultdict(list)
        for plan in self.plan_requests(requests):
            _, _, budget, s, _ = plan
            groups[repr((budget.max_new, sorted((k, str(v)) for k, v in s.items() if k != "task")))].append(plan)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until")
        done = 0  # not bar.n: a disabled tqdm (disable_tqdm, TQDM_DISABLE) does not count
        for group in groups.values():
            group.sort(key=lambda p: -len(p[2].prompt))
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                s, max_new = batch[0][3], batch[0][2].max_new
                stop = until_checker(self._decode_raw, s["until"])
                gens: list[Generation] = self._generate(
                    [p[2].prompt for p in batch], max_new, s["temperature"], s["top_p"], [p[4] for p in batch], stop
                )
                for (i, context, budget, s_, seed), g in zip(batch, gens, strict=True):
                    text = self.tok_decode(g.tokens)
                    for u in s_["until"]:
                        text = text.split(u)[0]
                    results[i] = text
                    self.finish_reasons[(context, text)].append(g.finish)
                    self.generation_log.append(
                        {
                            **s_,
                            "max_new_tokens": budget.max_new,
                            "requested_new_tokens": budget.requested,
                            "prompt_tokens": len(budget.prompt),
                            "seed": seed,
                            "new_tokens": len(g.tokens),
                            "finish": g.finish,
                            "context_truncated": budget.truncated,
                            "context": self.max_length,
                        }
                    )
                bar.update(len(batch))
                done += len(batch)
                if self.on_generated is not None:
                    self.on_generated(done, len(requests))
        bar.close()
        return results  # type: ignore[return-value]
