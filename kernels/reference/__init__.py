"""NumPy reference kernels: readable, float64-capable, the ground truth for every other version.

Array signatures (forward returns `(out, cache)`; backward takes `(grad_out, cache)` and returns a
tuple with one gradient per array input, None where an input was None):

    matmul(a, b)                              a (..., M, Din), b (..., Din, Dout) -> (..., M, Dout)
    linear(x, w, b)                           x (..., Din), w (Dout, Din), b (Dout,)|None -> (..., Dout)
    patch_embed(x, w, b)                      x (B, C, H, W), w (D, C, P, P), b (D,) -> (B, Np, D), raster order
    layernorm(x, w, b, eps)                   over the last axis; w, b (D,)
    gelu(x)                                   exact erf form: x * Phi(x)
    softmax(x)                                over the last axis
    attention(q, k, v, scale)                 q, k, v (B, Hh, N, hd) -> (B, Hh, N, hd)
    softmax_cross_entropy(logits, labels, label_smoothing)
                                              logits (B, K), labels int (B,) -> 0-d mean loss;
                                              backward returns (dlogits,)
    adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
                                              in place on p, m, v (torch.optim.AdamW semantics);
                                              no backward
    conv2d(x, w, b, stride, padding)          x (B, C, H, W), w (O, C, kh, kw), b (O,)|None, stride (sh, sw),
                                              padding (top, bottom, left, right) -> (B, O, Ho, Wo)
    weight_standardize(w, eps)                per output channel (row of w.reshape(O, -1)): zero mean, unit var
    groupnorm(x, w, b, groups, eps, relu)     x (B, C, ...), w, b (C,): normalised per (image, group of C/G),
                                              then ReLU if relu
    max_pool2d(x, kernel, stride, padding, pad_value)
                                              x (B, C, H, W) -> (B, C, Ho, Wo); backward returns (dx,)
"""
from ..registry import register
from . import attention, conv, dense, loss, normact, optim

_RUN = "NumPy reference"
register("matmul", "reference", dense.matmul_forward, dense.matmul_backward, description=f"{_RUN}: np.matmul (BLAS)")
register("linear", "reference", dense.linear_forward, dense.linear_backward, description=f"{_RUN}: x @ w.T + b (BLAS)")
register("patch_embed", "reference", dense.patch_embed_forward, dense.patch_embed_backward,
         description=f"{_RUN}: patchify by reshape, then one matmul")
register("layernorm", "reference", normact.layernorm_forward, normact.layernorm_backward,
         description=f"{_RUN}: mean/var over the last axis")
register("gelu", "reference", normact.gelu_forward, normact.gelu_backward, description=f"{_RUN}: x * Phi(x), scipy erf")
register("softmax", "reference", normact.softmax_forward, normact.softmax_backward, description=f"{_RUN}: max-shifted exp")
register("attention", "reference", attention.attention_forward, attention.attention_backward,
         description=f"{_RUN}: materialises the N x N probabilities")
register("softmax_cross_entropy", "reference", loss.softmax_cross_entropy_forward, loss.softmax_cross_entropy_backward,
         description=f"{_RUN}: log-softmax, smoothed targets")
register("adamw_update", "reference", optim.adamw_update, None, description=f"{_RUN}: AdamW in a few array expressions")
register("conv2d", "reference", conv.conv2d_forward, conv.conv2d_backward,
         description=f"{_RUN}: im2col by a strided view, one matmul for the batch, col2im by kh*kw slice adds")
register("weight_standardize", "reference", conv.weight_standardize_forward, conv.weight_standardize_backward,
         description=f"{_RUN}: mean/var per output channel (rows of w.reshape(O, -1))")
register("groupnorm", "reference", conv.groupnorm_forward, conv.groupnorm_backward,
         description=f"{_RUN}: mean/var per (image, group) over x.reshape(B, G, -1)")
register("max_pool2d", "reference", conv.max_pool2d_forward, conv.max_pool2d_backward,
         description=f"{_RUN}: argmax over a strided window view, np.add.at backward")
