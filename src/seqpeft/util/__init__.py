"""The bottom layer: atomic writes, errors that name the file, line and fix, quieting of known
harmless library output, progress bars. Imports nothing else of seqpeft."""
