"""What is done with a trained ViT: the paper's measurements (Sec. 4.5), the `minivit analyze`
report and its plots, few-shot linear evaluation (Sec. 4.1) and throughput (App. D.5).

    measures.py    the numbers behind the analysis figures (pure NumPy)
    report.py      `minivit analyze`: the figures and analysis.json for one checkpoint
    plots.py       matplotlib figures (analysis, training curves, sweeps)
    fewshot.py     few-shot linear evaluation of frozen representations
    throughput.py  `minivit bench model`: images/s and the largest batch against resolution
"""
from .measures import (attention_rollout, class_token_attention_map, mean_attention_distance, patch_distances,
                       patch_embedding_pcs, position_embedding_similarity, upsample_map)
from .fewshot import fewshot_linear_eval, sample_shots

__all__ = ["attention_rollout", "class_token_attention_map", "fewshot_linear_eval", "mean_attention_distance",
           "patch_distances", "patch_embedding_pcs", "position_embedding_similarity", "sample_shots",
           "upsample_map"]
