"""Task kind ``signal_peptide`` (PEFT-SP / SignalP 6.0): the kind's registration (``kind``), its
objective (``objective``), the three-line FASTA reader (``fasta``), the 8-state CRF (``crf``), the
37 region states and their CRF (``region_labels``, ``regions``), PEFT-SP's metrics (``metrics``)
and the kingdom x type table and figures (``report``)."""
