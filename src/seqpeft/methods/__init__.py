"""Fine-tuning methods: the registry (``registry``: peft configs by name, and one module per
method seqpeft implements itself, as peft's tuners: adapters and deep prompts, AdaLoRA + random
sampling, LoPA, QLoRA, domain-shift prompting). A new method is one module here and one
``register`` call in ``registry``."""
