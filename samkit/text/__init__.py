"""Text front ends shared by model families: CLIP's byte-level BPE tokenizer (``clip_tokenizer``,
used by the CLIP text tower and by the open-vocabulary layer). Torch-free."""
