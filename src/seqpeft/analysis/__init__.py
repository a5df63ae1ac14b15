"""Results across runs: the summary and table, figures and their shared style, published numbers
beside ours, the signal-peptide report, and viewing the HTML report."""
