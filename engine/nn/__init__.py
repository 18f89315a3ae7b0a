"""Model building blocks below both serving (``engine.learning``) and training (``engine.training``).

LoRA layers and weights (``lora``), the sentence encoder's and the LLM's trainable top
layers (``encoder_top``, ``decoder_top``), the inner loop both meta-training and a
channel's consolidation run (``inner_loop``), chat exchanges as token batches
(``chat_batches``), the prototypical losses (``protonet``) and content digests
(``digests``). Nothing here knows about channels, the store or the engine.
"""
