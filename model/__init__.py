"""DeepSeek-V3 architecture in plain torch (MLA, DeepSeekMoE with loss-free balancing, MTP).

Depends on torch, numpy and safetensors only, so it runs on a bare GPU worker.
"""

from crawl2score.model.checkpoint import load_checkpoint, save_model
from crawl2score.model.config import ModelArgs
from crawl2score.model.model import LossOutput, Transformer
from crawl2score.model.presets import PRESETS, get_preset

__all__ = ["PRESETS", "LossOutput", "ModelArgs", "Transformer", "get_preset", "load_checkpoint", "save_model"]
