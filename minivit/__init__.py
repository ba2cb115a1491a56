"""minivit: a readable, fast Vision Transformer on NumPy with a hand-written autograd core.

    import minivit
    model = minivit.create_model("vit_cifar_patch4_32")
    logits = model(images)                     # images: float32 (B, C, H, W)
    loss = minivit.functional.cross_entropy(logits, labels)
    loss.backward()

Read in this order: autograd.py (Tensor, Function, backward), functional.py (the fused ops),
nn.py (Module, Linear, LayerNorm), vit.py (the model, Eq. 1-4) with posemb.py and variants.py,
optim.py (AdamW). Grouped below: data/, train/, analysis/; interop.py and cli.py at the edge.

`import minivit` changes nothing in the process. At the first kernel call the CPU kernels load and
make a few stated process-wide changes (Numba's threading layer, NumPy's BLAS thread count during
minivit's products, glibc's malloc thresholds); the user's own settings win and os.environ is never
written. kernels/cpu/process.py lists every change, when it happens and how to opt out.
"""
import kernels  # noqa: F401  (the fused ops' registry; the CPU kernels load on first use)

from . import functional, nn, optim
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from .variants import create_model, list_models, model_config, register_model
from .rng import get_rng_state, manual_seed, set_rng_state
from .vit import ViT, ViTConfig

__version__ = "0.1.0"

__all__ = [
    "Function", "Tensor", "ViT", "ViTConfig", "create_model", "enable_grad", "functional", "get_rng_state",
    "is_grad_enabled", "list_models", "manual_seed", "model_config", "nn", "no_grad", "optim", "register_model",
    "set_rng_state", "tensor",
]
