# seqpeft: a benchmark of parameter-efficient fine-tuning for DNA and protein language models.
#
#   snakemake --profile profiles/local                              # full benchmark (config/config.yaml)
#   snakemake --profile profiles/local --configfile config/demo.yaml  # offline demo, minutes on a laptop
#   snakemake --profile profiles/slurm                              # on a SLURM cluster
#
# Reruns follow missing outputs, changed inputs (mtime, input sets) and changed parameters: each
# job gets only its own slice of the config as params, so editing methods.lora.r reruns only the
# lora jobs. Code changes do not rerun anything (--rerun-triggers mtime params input, set in both
# profiles); after changing library code, rerun what it affects with --forcerun RULE.
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

from seqpeft.preflight.check import check_config
from seqpeft.preflight.read import config_error_message
from seqpeft.util.errors import SeqpeftInputError
from seqpeft.config.paths import claim_results, results_owner_note
from seqpeft.config.pins import merge_pins_file, pins_outputs, resolved_pins_inputs, unpinned_entries


# config/config.yaml is the default; a --configfile replaces it instead of being merged into it,
# so config/demo.yaml runs exactly the demo.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# config/pins.yaml (written by `seqpeft pin`) beside the config fills in unset revisions/checksums.
try:
    merge_pins_file(config, workflow.configfiles, warn=lambda line: workflow.is_main_process and print(line, file=sys.stderr))
except SeqpeftInputError as error:
    raise WorkflowError(f"Invalid pins: {error}") from None


# Types and key spelling (JSON schema, which also fills in defaults), then cross-references.
# A problem is reported as one line naming the key path, e.g.
#   experiments[0].models: unknown model 'mistral_dn'; known: ...
try:
    validate(config, "workflow/schemas/config.schema.yaml")
    check_config(config)
except (WorkflowError, SeqpeftInputError) as error:
    message = config_error_message(error)
    if message is None:
        raise
    print(f"Invalid config ({', '.join(map(str, workflow.configfiles))}): {message}", file=sys.stderr)
    raise WorkflowError("Invalid config: see the message above.") from None


# Unpinned entries: listed one line each (dry runs too); their jobs refuse to run unless allowed.
UNPINNED = unpinned_entries(config)
if UNPINNED and workflow.is_main_process:
    for entry in UNPINNED:
        print(entry.line(), file=sys.stderr)
    print(
        "allow_unpinned: true, so they run and what they use is recorded in metrics.json and results/pins.resolved.yaml"
        if config["allow_unpinned"]
        else "their jobs refuse to run: `seqpeft pin --configfile CONFIG` resolves them into pins.yaml beside the config (or set allow_unpinned: true)",
        file=sys.stderr,
    )


# Two configs sharing one results folder: said on every run (dry runs too); a run claims the folder.
RESULTS_SHARED = results_owner_note(config, workflow.configfiles)
if RESULTS_SHARED and workflow.is_main_process:
    print(RESULTS_SHARED, file=sys.stderr)


onstart:
    claim_results(config, workflow.configfiles)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/pins.smk"
include: "workflow/rules/rehearse.smk"


localrules:
    all,
    rehearsal,


rule all:
    input:
        all_outputs(),
        pins_outputs(config),
    default_target: True
