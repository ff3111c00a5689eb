"""ProbPose-DH training data: the dual-map targets on top of `training.data`'s samples (same augmentation path).

`DualPoseDataset` is a `CocoPoseDataset` whose items also carry the targets of ``probpose.dual_codec.encode_dual``
(expert / wide maps and their 'in/all' weights, presence against the wide window, with in_rect = the crop
augmentation's keep-rectangle flags) and the per-sample ``bbox_mask`` of the official merge rule. `visible` is
already 0 outside the keep rectangle (``data.make_sample``). Also the trainer's DH pieces: the loss on a collated
batch and the batch decode used by in-loop validation. See docs/dual.md ("Training").
"""

from __future__ import annotations

import numpy as np
import torch

from probpose.constants import INPUT_SIZE
from probpose.dual_codec import bbox_mask, decode_dual, encode_dual
from probpose.geometry import udp_warp_matrix, warp_image
from probpose.models.dual import DualProbPoseConfig
from training.data import CocoPoseDataset, PersonRecord, Sample
from training.dual_losses import dual_losses

__all__ = ["sample_box", "sample_bbox_mask", "dual_item", "DualPoseDataset", "dual_batch_losses",
           "decode_dual_batch", "alias_wide_branch"]


def sample_box(person: PersonRecord, sample: Sample) -> np.ndarray:
    """The person box in the sample's (possibly flipped) image, cut to the crop augmentation's keep rectangle."""
    box = person.box.astype(np.float64).copy()
    if sample.flipped:
        w = person.image_size[0]
        box = np.array([(w - 1) - box[2], box[1], (w - 1) - box[0], box[3]])
    if sample.cropped and sample.crop_rect is not None:
        r = sample.crop_rect
        box = np.concatenate([np.maximum(box[:2], r[:2]), np.minimum(box[2:], r[2:])])
    return box


def sample_bbox_mask(box_xyxy, sample: Sample, image_size: tuple[int, int]) -> np.ndarray:
    """The official TopdownAffine ``bbox_mask`` of a training sample, (256, 192) bool.

    Without rotation ``dual_codec.bbox_mask`` (analytic); with rotation the uint8 raster of the clipped,
    int-truncated box is warped with the sample's affine (bilinear) and thresholded at 0.5, as the official code.
    """
    if sample.rotation == 0.0:
        return bbox_mask(box_xyxy, sample.center, sample.scale, image_size)
    w, h = image_size
    b = np.asarray(box_xyxy, dtype=np.float64).copy()
    b[:2] = np.maximum(b[:2], 0)
    b[2:] = np.minimum(b[2:], (w, h))
    x0, y0, x1, y1 = b.astype(np.int64)
    raster = np.zeros((h, w), dtype=np.uint8)
    raster[y0:y1, x0:x1] = 255
    matrix = udp_warp_matrix(sample.center, sample.scale, sample.rotation)
    return warp_image(raster, matrix, INPUT_SIZE) >= 128


def dual_item(sample: Sample, person: PersonRecord, config: DualProbPoseConfig) -> dict[str, torch.Tensor]:
    """The DH tensors of one sample: expert_map / wide_map (K,64,48), expert_weight / wide_weight /
    wide_presence (K,) float32, bbox_mask (256,192) bool."""
    t = encode_dual(sample.keypoints, sample.annotated, config.in_padding, config.out_padding, config.spread,
                    in_rect=sample.in_rect)
    mask = sample_bbox_mask(sample_box(person, sample), sample, person.image_size)

    def f32(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32)

    return {"expert_map": f32(t.expert_maps), "wide_map": f32(t.wide_maps), "expert_weight": f32(t.expert_weights),
            "wide_weight": f32(t.wide_weights), "wide_presence": f32(t.presence),
            "bbox_mask": torch.from_numpy(np.ascontiguousarray(mask))}


class DualPoseDataset(CocoPoseDataset):
    """`CocoPoseDataset` with the ProbPose-DH targets (`dual_item`) added to every item.

    ``dual``: the model's DualProbPoseConfig (window paddings and target spread). Other arguments as the parent.
    """

    def __init__(self, *args, dual: DualProbPoseConfig | None = None, **kwargs) -> None:
        self.dual = dual or DualProbPoseConfig()
        super().__init__(*args, **kwargs)

    def extra_targets(self, sample: Sample, index: int) -> dict[str, torch.Tensor]:
        return dual_item(sample, self.people[index], self.dual)


def dual_batch_losses(out, batch: dict, config: DualProbPoseConfig | None) -> dict[str, torch.Tensor]:
    """``dual_losses`` on a collated `DualPoseDataset` batch: {"loss_kpt", "loss_kpt2", "loss_presence",
    "loss_visibility", "loss_oks", "loss"} (the trainer's loss dict)."""
    config = config or DualProbPoseConfig()
    d = dual_losses(out, batch["expert_map"], batch["wide_map"], batch["expert_weight"], batch["wide_weight"],
                    batch["wide_presence"], batch["annotated"], batch["visible"], bbox_mask=batch["bbox_mask"],
                    in_padding=config.in_padding, out_padding=config.out_padding, spreads=config.spread)
    losses = {"loss_kpt": d.kpt, "loss_kpt2": d.kpt2, "loss_presence": d.presence,
              "loss_visibility": d.visibility, "loss_oks": d.oks}
    losses["loss"] = d.total
    return losses


def decode_dual_batch(out, batch: dict, config: DualProbPoseConfig | None) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    """Validation decode of a DH batch: merged keypoints (B,K,2) input px (``decode_dual`` with the batch's box
    masks), predicted presence (B,K) bool (>= 0.5) and the wide-window presence label (B,K) bool."""
    config = config or DualProbPoseConfig()
    dec = decode_dual(out.expert_maps.float().cpu().numpy(), out.wide_maps.float().cpu().numpy(),
                      batch["bbox_mask"].cpu().numpy(), config.in_padding, config.out_padding, config.spread)
    return (dec.keypoints, out.presence.float().cpu().numpy() >= 0.5,
            batch["wide_presence"].cpu().numpy() > 0)


def alias_wide_branch(state_dict: dict, own: dict) -> dict:
    """Warm start of a DH model from a single-map checkpoint: the wide branch's deconvolutions
    (``head.second_head.0.*``) copy the expert ones (``head.deconv_layers.*``) when the source has no wide branch.
    Its 1x1 map layer stays fresh (it maps to a different window). Returns a new dict."""
    sd = dict(state_dict)
    if any(k.startswith("head.second_head.") for k in sd):
        return sd
    for k, v in state_dict.items():
        if k.startswith("head.deconv_layers."):
            alias = "head.second_head.0." + k[len("head.deconv_layers."):]
            if alias in own:
                sd[alias] = v
    return sd

