"""The claims on where in the network stability is gained, layer by layer (Fig. 3, Fig. 6, Fig. 2, and
the probe page that sets rotation invariance against R_k): R_k falls with depth, spatial pooling in the
first half, channel pooling in the second half, shuffling changes nothing on scale detection, trained
early filters concentrate on the constant filter, and the layer NV tracks R_k.

The batch-norm control of the shuffle (``book/methods.md``, "Channel shuffling"): in batch-norm nets a
shuffled network keeps the running statistics of the unshuffled one, so part of a shuffle gap can be stale
statistics rather than lost channel pooling. :func:`claim_shuffle_no_effect_recalibrated` (Fig. 6) and
:func:`claim_channel_pooling_recalibrated` (Fig. 3) apply the rules of :func:`claim_shuffle_no_effect` and
:func:`claim_channel_pooling_second_half` to the batch-norm nets of the ``recalibrated`` table (every
network measured with its batch-norm running statistics re-estimated after shuffling); given the
``layers`` table too, they report the late-layer (second-half) gap of the same runs before and after
recalibration; :func:`recalibration_texts` and :func:`recalibration_table` say it on the page.

Beside the claims, the tables and sentences the layer pages show: the shuffling gaps layer by layer
(:func:`layer_shuffle_gaps`, shown by :func:`layer_gap_tables`: Fig. 6) and per half of the network
(:func:`shuffle_gap_table`: Fig. 3), the story of the output stabilities told at the last node
(:func:`output_node_story`), and the rotation NV of a layer matched with its R_k (:func:`layer_nv_vs_rk`).

Same conventions as :mod:`stabkit.report.stability_claims`: tidy tables in, a
:class:`~stabkit.report.verdicts.Claim` out. A page imports this package (``from stabkit.report import
layer_claims``) and calls the names below; they live in one submodule per concept, each importing only
those above it:

- :mod:`~stabkit.report.layer_claims.pooling`: the output fall and its precondition, depth slopes, R_k with
  depth, spatial and channel pooling by half, the shuffling claims and gap tables, the output node's story,
  and the helpers the other submodules share;
- :mod:`~stabkit.report.layer_claims.control`: the batch-norm recalibrated control (its claims, texts and
  table);
- :mod:`~stabkit.report.layer_claims.spectra`: Fig. 2's concentration of the early filters' spectra;
- :mod:`~stabkit.report.layer_claims.invariance`: a layer's rotation NV against its R_k.
"""
from __future__ import annotations

from .control import (
    NEGLIGIBLE_GAP,
    claim_channel_pooling_recalibrated,
    claim_shuffle_no_effect_recalibrated,
    recalibration_table,
    recalibration_texts,
    removed_text,
)
from .invariance import claim_nv_tracks_rk, layer_nv_vs_rk, nv_rk_correlations
from .pooling import (
    MIN_OUTPUT_FALL,
    claim_channel_pooling_second_half,
    claim_rk_falls_with_depth,
    claim_shuffle_no_effect,
    claim_spatial_pooling_first_half,
    depth_slopes,
    layer_gap_tables,
    layer_shuffle_gaps,
    output_fall,
    output_node_story,
    shuffle_gap_table,
)
from .spectra import claim_spectra_concentrate

__all__ = [
    "MIN_OUTPUT_FALL", "output_fall", "depth_slopes", "claim_rk_falls_with_depth",
    "claim_channel_pooling_second_half", "claim_spatial_pooling_first_half", "claim_shuffle_no_effect",
    "layer_shuffle_gaps", "layer_gap_tables", "shuffle_gap_table", "output_node_story",
    "claim_spectra_concentrate", "layer_nv_vs_rk", "nv_rk_correlations", "claim_nv_tracks_rk",
    "claim_shuffle_no_effect_recalibrated", "claim_channel_pooling_recalibrated", "NEGLIGIBLE_GAP",
    "removed_text", "recalibration_texts", "recalibration_table",
]
