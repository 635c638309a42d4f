"""Open vocabulary: CLIP's tokenizer, dense CLIP features (MaskCLIP) and the layer that names
masks and finds them from text. Sits on the model core; nothing below it imports it."""
