"""Meta-training and the two benchmarks' machinery: never imported by what serves a message.

Episodes and the metric's outer loop (``episodes``, ``metric_train``, ``siamese``), the
LoRA initialisation's channel-tasks and meta-learner (``lora_tasks``, ``maml``), and the
evaluations behind ``heedful eval`` (``intent_eval``, ``lora_eval``).
"""
