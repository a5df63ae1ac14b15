"""Task kind ``signal_peptide`` (PEFT-SP / SignalP 6.0): the kind's registration (``kind``), its
objective (``objective``), the 8-state CRF (``crf``), the 37 region states and their CRF
(``region_labels``, ``regions``) and PEFT-SP's metrics (``metrics``). The three-line FASTA reader
is a data reader (``seqpeft.data.signalp``); the kingdom x type table and figures are results
(``seqpeft.analysis.signal_peptide``)."""

from seqpeft.tasks.signal_peptide import kind  # noqa: F401  (importing it registers the kind)
