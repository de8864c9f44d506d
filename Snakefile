# ICP reproduction pipeline: config -> data -> dense activations -> per-block steps -> model
# -> evaluations -> results/tables.md.   Main command: snakemake --cores 1 results/tables.md
import sys

from snakemake.utils import min_version, validate

min_version("8.0")
sys.path.insert(0, workflow.basedir)  # the icp package, also when it is not pip-installed

# The embedded default, unless --configfile names another (configs are never merged: a paper-grid
# run must not inherit the default's model).
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/stages.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Local runs: one preloaded process starts the jobs (icp/forkserver.py; ICP_FORKSERVER=off: none)
FORKSERVER = []


onstart:
    FORKSERVER.append(start_forkserver())


onsuccess:
    for server in FORKSERVER:
        stop_forkserver(server)


onerror:
    for server in FORKSERVER:
        stop_forkserver(server)


# Seconds of work on small files: on a cluster they run where Snakemake runs, not as jobs.
localrules:
    all,
    zeroshot_tasks,
    shape_images,
    collect_results,
    plots,
    tables,


rule all:
    default_target: True
    input:
        L.pattern("tables"),
