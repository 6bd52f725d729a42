"""DeepSeek-V3 architecture in plain torch (MLA, DeepSeekMoE with loss-free balancing, MTP).

Depends on torch, numpy and safetensors only, so it runs on a bare GPU worker.
"""

from model.checkpoint import load_checkpoint, save_model
from model.config import ModelArgs
from model.model import LossOutput, Transformer
from model.presets import PRESETS, get_preset

__all__ = ["PRESETS", "LossOutput", "ModelArgs", "Transformer", "get_preset", "load_checkpoint", "save_model"]
