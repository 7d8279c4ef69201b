"""The `climb` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from climb_assets.defs.failures import MAX_ERROR_CHARS, USER_ERRORS, error_line
from climb_assets.settings import CONFIG_ENV_VAR, config_file, load_settings

if TYPE_CHECKING:
    from climb_assets.settings import Settings
    from climb_assets.store import Layout


def _cmd_run(args: argparse.Namespace) -> int:
    from climb_assets.core.shared.run_owner import project_lock
    from climb_assets.store import Layout

    settings = load_settings()
    layout = Layout(settings.output_dir)
    with project_lock(layout.run_lock, "climb run"):
        _run_locked(args, settings, layout)
    return 0


def _run_locked(args: argparse.Namespace, settings: Settings, layout: Layout) -> None:
    from climb_assets.cli.catalog import write_catalog
    from climb_assets.cli.run_plan import describe_result, describe_run
    from climb_assets.cli.runner import project_instance, run_pipeline
    from climb_assets.definitions import build_definitions

    for line in describe_run(settings):
        print(line)
    defs = build_definitions(settings)
    with project_instance() as instance:
        run_pipeline(
            defs,
            settings,
            instance,
            log_level="INFO" if args.verbose else "WARNING",
            force=args.force,
            evaluate=args.evaluate,
            debug=args.debug,
        )
    write_catalog(layout)
    for line in describe_result(layout):
        print(line)
    print(f"dataset:      {layout.dataset.resolve()}")
    print(f"dataset card: {layout.dataset_card.resolve()}")
    print(f"SQL catalog:  {layout.catalog.resolve()}  (duckdb {layout.catalog}, or `climb sql`)")
    print(f"report:       {layout.report.resolve()}  (`climb report --open`)")
    if args.evaluate:
        _print_evaluation(layout)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from climb_assets.cli.runner import check_success, launch, log_file, project_instance
    from climb_assets.core.shared.identity import search_identity
    from climb_assets.core.shared.run_owner import project_lock
    from climb_assets.definitions import build_definitions
    from climb_assets.defs.assets.evaluation import missing_upstream
    from climb_assets.defs.run_guard import recover_dead_runs
    from climb_assets.store import Layout

    settings = load_settings()
    overrides = {"seeds": args.seeds, "tokens": args.tokens}
    if any(v is not None for v in overrides.values()):
        evaluation = settings.evaluation.model_copy(
            update={k: v for k, v in overrides.items() if v is not None}
        )
        settings = settings.model_copy(update={"evaluation": evaluation})
    layout = Layout(settings.output_dir)
    if problem := missing_upstream(settings, layout):
        raise FileNotFoundError(problem)
    # A search made on other super-clusters raises StaleInput here, one line, before any run.
    search_identity(
        layout, "climb evaluate", lambda line: print(f"climb: warning: {line}", file=sys.stderr)
    )
    defs = build_definitions(settings)
    log_level = "INFO" if args.verbose else "WARNING"
    log = log_file(settings, "evaluate")
    with project_lock(layout.run_lock, "climb evaluate"), project_instance() as instance:
        recover_dead_runs(instance)
        result = launch(
            defs, instance, ("mixture_evaluation",), None, log_level, print, log, args.debug
        )
    check_success(result, log, None)
    _print_evaluation(layout)
    return 0


def _print_evaluation(layout: Layout) -> None:
    import json

    from climb_assets.core.search.evaluation_run import report_lines

    summary = json.loads(layout.evaluation_summary.read_text())
    for line in report_lines(summary):
        print(line)
    print(f"evaluation:   {layout.evaluation.resolve()}")


def _cmd_trace(args: argparse.Namespace) -> int:
    import json

    from climb_assets.cli.lineage import trace

    found = trace(args.doc_id, load_settings())
    if args.json:
        print(json.dumps(found.to_dict(), indent=2, default=str))
        return 0
    print(f"document       {found.doc_id}")
    kind = "row (0-based)" if found.source_file.suffix == ".parquet" else "line"
    print(f"source         {found.source_file} {kind} {found.row}")
    print(f"cluster        {found.cluster} (super-cluster {found.super_cluster})")
    print(f"quality score  {found.quality_score:.3f}")
    print(f"in dataset     {found.times_in_dataset} time(s)")
    print(f"source record  {json.dumps(found.source_record, default=str)[:500]}")
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from climb_assets.cli.catalog import connect, write_catalog
    from climb_assets.core.shared.read_only_sql import check_read_only
    from climb_assets.store import Layout

    layout = Layout(load_settings().output_dir)
    if args.refresh:
        print(f"wrote {layout.catalog}: views {', '.join(write_catalog(layout))}")
    if args.query:
        check_read_only(args.query)
        con, _ = connect(layout)
        result = con.sql(args.query)
        if result is not None:
            result.show(max_rows=args.max_rows)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from climb_assets.defs.report import report_warnings, write_report
    from climb_assets.store import Layout

    layout = Layout(load_settings().output_dir)
    path = write_report(layout).path.resolve()
    for line in report_warnings(layout):  # also at the top of the page
        print(f"climb: warning: {line}", file=sys.stderr)
    print(path)
    if args.open:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            print("climb: no browser found; open the file above", file=sys.stderr)
    if args.serve:
        from climb_assets.cli.serve import serve_report

        serve_report(path, args.host, args.port)
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    settings = load_settings()
    print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="climb",
        description="CLIMB data-mixture search as Dagster assets. Run from the project root.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"settings YAML overriding the defaults (default: ${CONFIG_ENV_VAR} if set)",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize every asset in dependency order")
    run.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    run.add_argument(
        "--force",
        action="store_true",
        help="redo per-shard work (documents, embeddings) even for unchanged shards",
    )
    run.add_argument(
        "--evaluate",
        action="store_true",
        help="also run mixture_evaluation (larger models on the optimal and baseline mixtures)",
    )
    run.set_defaults(func=_cmd_run)

    evaluate = sub.add_parser(
        "evaluate",
        help="train larger models on the optimal mixture and the baselines at equal tokens, "
        "several seeds each, and print mean ± std and the optimal's margins",
    )
    evaluate.add_argument("--seeds", type=_positive, help="models per mixture (evaluation.seeds)")
    evaluate.add_argument(
        "--tokens", type=_positive, help="training tokens per model (evaluation.tokens)"
    )
    evaluate.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    evaluate.set_defaults(func=_cmd_evaluate)

    trace = sub.add_parser("trace", help="where a document of the final dataset came from")
    trace.add_argument("doc_id", help="a doc_id column value of the dataset")
    trace.add_argument("--json", action="store_true", help="print the trace as JSON")
    trace.set_defaults(func=_cmd_trace)

    sql = sub.add_parser(
        "sql",
        help="query the pipeline's tables with DuckDB, read-only (views: documents, rejects, "
        "document_index, assignments, cluster_profiles, super_cluster_map, super_clusters, "
        "proxy_runs, loss_curves, climbmix)",
    )
    sql.add_argument(
        "query", nargs="?", help='SQL, e.g. "SELECT reason, count(*) FROM rejects GROUP BY 1"'
    )
    sql.add_argument("--refresh", action="store_true", help="rewrite outputs/climb.duckdb")
    sql.add_argument("--max-rows", type=int, default=40)
    sql.set_defaults(func=_cmd_sql)

    report = sub.add_parser(
        "report",
        help="write the latest search as one HTML page (mixture, search trace, loss curves, "
        "super-clusters with examples, evaluation, dataset) and print its path",
    )
    report.add_argument("--open", action="store_true", help="also open it in a web browser")
    report.add_argument(
        "--serve",
        action="store_true",
        help="then serve it on a local http:// address (printed) until Ctrl-C: a link the "
        "Dagster UI's page can open, unlike file://",
    )
    report.add_argument("--host", default="127.0.0.1", help="address to serve on (--serve)")
    report.add_argument("--port", type=int, default=8765, help="port to serve on; 0: any free")
    report.set_defaults(func=_cmd_report)

    from climb_assets.cli.predictor import add_parser as add_predictor_parser

    add_predictor_parser(sub)  # sets its own func

    config = sub.add_parser("config", help="inspect settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective settings as YAML")
    show.set_defaults(func=_cmd_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    from climb_assets.core.shared.run_owner import sigterm_interrupts

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if (config := config_file(args.config)) is not None:
        # Absolute, once, and through the environment: every step process, and the `dagster
        # dev` a user starts from another folder, then load the same settings and fingerprints.
        os.environ[CONFIG_ENV_VAR] = str(config)
    if threading.current_thread() is threading.main_thread():
        # A shell starts background jobs (CI runners, `climb run &`) with SIGINT ignored, and
        # Dagster copies SIGINT's handler onto SIGTERM after each run: both would be ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with sigterm_interrupts():  # SIGTERM stops climb like Ctrl-C: locks and temp files cleaned
            return args.func(args)
    except KeyboardInterrupt:
        print("climb: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            if details := getattr(err, "details", None):  # a failed step's own traceback
                print(details, file=sys.stderr)
            raise
        print(f"climb: error: {error_line(err)}", file=sys.stderr)
        return 1


__all__ = ["MAX_ERROR_CHARS", "USER_ERRORS", "build_parser", "error_line", "main"]


if __name__ == "__main__":
    sys.exit(main())
