"""Encoder objectives beyond the sigmoid loss (SigLIP 2, TIPSv2), each a small module the two-tower model composes
by gin, with a weight and the fraction of training at which it starts:

  (the EMA teacher they learn from is the trainer's: vlm/ema.py, vlm.trainer.TrainState.teacher)
  heads.py        the projection head (MLP, L2 bottleneck, weight-normalised prototypes) DINO and iBOT read
  distillation.py SILC-style self-distillation: DINO's loss between the teacher's global views and every
                  student view (centring, sharpening, temperatures)
  masked.py       masked prediction (TIPS / iBOT): block masks, and the patch loss on masked patches, with
                  TIPSv2's iBOT++ counting the visible ones too
  patch_distillation.py  every patch supervised by a frozen (larger) encoder's patch tokens (TIPSv2)
  locca.py        SigLIP 2's captioning-and-localisation decoder over the ViT's tokens (pretraining only)
  acid.py         ACID-style active data curation from a frozen teacher (SigLIP 2's small models)
  compose.py      how SigLIPModel composes them into one step's loss
"""
