"""``python -m evalkit [overrides]``: one run, one folder. With no overrides: the offline demo (tiny random-weight
stereo MusicGen, shipped prompts, synthesised references, random-weight backbones, all labelled as such)."""
from __future__ import annotations

import sys


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from evalkit.spec import rewrite_overrides

    # metrics.<m>.protocol=<p> chooses the protocol file (a config group): metrics/<m>=<p>
    sys.argv[1:] = rewrite_overrides(sys.argv[1:])

    @hydra.main(config_path="../conf", config_name="config", version_base=None)
    def _main(cfg) -> None:
        from evalkit import distributed
        from evalkit.run import format_summary, run
        from evalkit.spec import RunSpec

        spec = RunSpec.from_config(cfg)
        dist = distributed.init()
        # under torchrun every rank resolves ${now:...} on its own: rank 0's folder is the run's
        out = dist.broadcast(HydraConfig.get().runtime.output_dir)
        summary = run(spec, out)
        dist.close()
        if not summary:
            return
        print(format_summary(summary))
        from evalkit.report.table import card_table, collect_runs, to_markdown

        print("\nIn the layout of the MusicGen model card (published values beside; report: python -m evalkit.report RUN_DIR):")
        print(to_markdown(card_table(collect_runs([out], ci=False))))
        from evalkit.report.paired import paired_markdown, paired_metrics, paired_table
        from evalkit.report.rundir import load_run
        from evalkit.report.table import run_labels

        record = load_run(out)
        for metric in paired_metrics([record]):
            print(paired_markdown(paired_table([record], run_labels([record]), metric), metric))

    _main()


if __name__ == "__main__":
    sys.exit(main())
