"""``python -m evalkit [overrides]``: one run, one folder. With no overrides: the offline demo (tiny random-weight
stereo MusicGen, shipped prompts, synthesised references, random-weight backbones, all labelled as such).

Exit status: 0 the run finished and every metric asked for has a number; 2 a setting or an input cannot work, or the
run folder cannot be written (a full disk, a read-only folder; the message names it and the fix; no traceback); 3 the
run finished but a metric asked for could not be computed (its reason is printed where its value would be;
``allow_missing_metrics=true`` makes this 0); 130 interrupted (Ctrl-C; what is finished is kept); 1 anything
unexpected.
"""
from __future__ import annotations

import sys

EXIT_OK, EXIT_UNEXPECTED, EXIT_INPUT, EXIT_MISSING_METRIC, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def user_errors() -> tuple[type, ...]:
    """Errors that mean "this setting or input cannot work": printed as one message, exit status 2. Every layer's
    such error derives from :class:`evalkit.errors.InputError`."""
    from evalkit.errors import InputError

    return (InputError,)


def missing_metrics(summary: dict) -> list[str]:
    """Metrics asked for (in ``metrics=``) that have no number, with the reason: could not be computed, or does not
    apply to this run (a CI job must not pass on a metric it never got)."""
    return [f"{name}: {e.get('error') or 'not applicable: ' + str(e.get('skipped'))}"
            for name, e in summary.get("metrics", {}).items() if e.get("value") is None]


def run_folder_problem(cfg) -> str | None:
    """Why the run folder of a composed config cannot take this run, in one line with the fix: it cannot be written
    (read-only, no permission, full disk: :func:`evalkit.stages.folder.writable_problem`), or another run holds it
    (:func:`evalkit.stages.folder.holder_of`; checked by torchrun's rank 0 only, whose lock the run's other ranks
    share). None when it can take it, or when the folder's name is only known inside Hydra's app."""
    import os
    from pathlib import Path

    from evalkit.stages.folder import holder_of, in_use_message, writable_problem

    try:
        out = Path(str(cfg.hydra.run.dir))
    except Exception:  # an interpolation only Hydra's app resolves
        return None
    problem = writable_problem(out)
    if problem is None and os.environ.get("RANK", "0") == "0":
        holder = holder_of(out)
        problem = in_use_message(out, holder) if holder else None
    return problem


def print_tables(summary: dict, out) -> None:
    from evalkit.report.paired import paired_markdown, paired_metrics, paired_table
    from evalkit.report.rundir import load_run
    from evalkit.report.table import CARD_SECTION, card_table, collect_runs, run_labels, to_markdown
    from evalkit.run import format_summary

    print(format_summary(summary))
    collected = collect_runs([out], ci=False)
    table = card_table(collected)
    card = collected[collected["section"] == CARD_SECTION]
    if (card["value"].notna() | (card["note"] != "")).any():  # a card metric was asked for (measured or n/a)
        print("\nIn the layout of the MusicGen model card (published values beside; report: python -m evalkit.report "
              "RUN_DIR):")
        print(to_markdown(table))
    else:  # no metric of the card was asked for: its table would be a row of dashes
        for sub in table.attrs["sections"].values():
            print(f"\n### {sub.attrs['title']}\n\n" + to_markdown(sub))
    record = load_run(out)
    for metric in paired_metrics([record]):
        print(paired_markdown(paired_table([record], run_labels([record]), metric), metric))


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from evalkit.spec import rewrite_overrides

    # metrics.<m>.protocol=<p> chooses the protocol file (a config group): metrics/<m>=<p>
    sys.argv[1:] = rewrite_overrides(sys.argv[1:])
    if not any(a.startswith("-") for a in sys.argv[1:]):  # a plain run (no -m sweep, --help, --cfg): check first
        from evalkit.spec import SpecError, compose

        try:
            cfg = compose(sys.argv[1:])
        except SpecError as exc:  # Hydra would print a search path and exit 1: one line and exit 2 instead
            print(f"evalkit: {exc}", file=sys.stderr)
            sys.exit(EXIT_INPUT)
        problem = run_folder_problem(cfg)
        if problem:  # before Hydra writes .hydra/ and its log there (and, if it cannot, ends in a traceback)
            print(f"evalkit: {problem}", file=sys.stderr)
            sys.exit(EXIT_INPUT)

    @hydra.main(config_path="../conf", config_name="config", version_base=None)
    def _main(cfg) -> None:
        from evalkit import distributed
        from evalkit.run import run
        from evalkit.spec import RunSpec

        try:
            spec = RunSpec.from_config(cfg)
            dist = distributed.init()
            # under torchrun every rank resolves ${now:...} on its own: rank 0's folder is the run's
            out = dist.broadcast(HydraConfig.get().runtime.output_dir)
            summary = run(spec, out)
        except user_errors() as exc:
            print(f"evalkit: {exc}", file=sys.stderr)
            sys.exit(EXIT_INPUT)
        except KeyboardInterrupt:
            print(f"\nevalkit: interrupted; what is finished is kept: run the same command again to resume "
                  f"({HydraConfig.get().runtime.output_dir})", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        dist.close()
        if not summary:
            return
        print_tables(summary, out)
        missing = missing_metrics(summary)
        if missing and not spec.allow_missing_metrics:
            print("evalkit: metrics asked for without a number (exit status 3; allow_missing_metrics=true to accept):"
                  "\n  " + "\n  ".join(missing), file=sys.stderr)
            sys.exit(EXIT_MISSING_METRIC)

    _main()


if __name__ == "__main__":
    sys.exit(main())
