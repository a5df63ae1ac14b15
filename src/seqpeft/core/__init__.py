"""The interfaces between the training loop and the task kinds: what a kind declares and the
registry that finds it (``registry``), a split of a tokenized task and its batches
(``batching``), and what a training objective is (``objectives``). The loop, the config checks
and the rules ask this layer; the kinds (``seqpeft.tasks``, above the loop) register with it."""
