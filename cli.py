"""The `tierone` command: serve, chat, index, runbooks lint, handoffs, eval."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.errors import TieroneError
from core.settings import Settings

if TYPE_CHECKING:
    from eval.cases import Case, Gate
    from eval.harness import Evaluator

app = typer.Typer(
    help="Tierone: a Tier-1 support resolver with structured L2 handoffs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runbooks_app = typer.Typer(help="Work with runbook packs.", no_args_is_help=True)
handoffs_app = typer.Typer(help="Read the L2 handoff queue.", no_args_is_help=True)
eval_app = typer.Typer(help="Play eval cases through the graph and report.")
app.add_typer(runbooks_app, name="runbooks")
app.add_typer(handoffs_app, name="handoffs")
keys_app = typer.Typer(help="API keys of L2 technicians and admins.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(eval_app, name="eval")

console = Console()
err = Console(stderr=True)

RunbooksOpt = Annotated[Path | None, typer.Option("--runbooks", help="Runbook pack folder (default: bundled).")]


def _settings(runbooks: Path | None = None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:  # each wrong setting by name, never its value (it may hold a secret)
        _fail(TieroneError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())))
    return settings.model_copy(update={"runbooks": runbooks}) if runbooks else settings


def _desk(settings: Settings) -> Any:
    """The desk database of these settings: its SQLite file, or TIERONE_DATABASE_URL's PostgreSQL."""
    from app.runtime import desk_target

    return desk_target(settings)


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}", highlight=False)
    raise typer.Exit(2)


def _training_bar(vectors: int) -> Callable[[int, int], None] | None:
    """A progress bar on stderr while a routing head trains (a terminal and a pack big enough to wait for)."""
    if not err.is_terminal or vectors < 200:
        return None
    from rich.progress import Progress

    bar = Progress(console=err, transient=True)
    task = bar.add_task(f"training the routing head on {vectors} examples", total=None)

    def update(done: int, total: int) -> None:
        if done == 0:
            bar.start()
        bar.update(task, completed=done, total=total)
        if done >= total:
            bar.stop()

    return update


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    runbooks: RunbooksOpt = None,
) -> None:
    """Serve the API and web chat (GET /healthz answers 200 once ready)."""
    import uvicorn

    from core import logs
    from server import create_app

    settings = _settings(runbooks)
    logs.configure(settings.log_format, settings.log_level)
    try:
        # On PostgreSQL: a wrong URL, or a schema older than this code, stops here (`tierone migrate`).
        from app.runtime import require_current_schema

        require_current_schema(settings)
    except TieroneError as exc:
        _fail(exc)
    # No uvicorn access log: it would print query strings (the SSE stream's ?token=); api/middleware.py
    # logs each request by route instead. On SIGTERM, turns in flight finish; open SSE streams are cut
    # after the grace period and their EventSource reconnects from its last line.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="The technician's name, shown to customers with their replies.")],
    role: Annotated[str, typer.Option("--role", help="l2, admin or lead.")] = "l2",
) -> None:
    """Make an API key and print it; only its hash is stored, so it cannot be shown again."""
    from app.auth import ApiKeys

    try:
        key = ApiKeys(_desk(_settings())).create(name, role)
    except TieroneError as exc:
        _fail(exc)
    err.print(f"API key for {name} ({role}); keep it now, it is not shown again:", highlight=False)
    console.print(key, highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """Every API key's holder, role and state (never the keys)."""
    from app.auth import ApiKeys

    for info in ApiKeys(_desk(_settings())).list():
        state = f"revoked {info.revoked_at}" if info.revoked_at else "live"
        typer.echo(f"{info.name}\t{info.role}\t{info.prefix}…\t{info.created_at}\t{state}")


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="Whose keys to revoke.")]) -> None:
    """Revoke every live key of a technician."""
    from app.auth import ApiKeys

    try:
        count = ApiKeys(_desk(_settings())).revoke(name)
    except TieroneError as exc:
        _fail(exc)
    console.print(f"revoked {count} key(s) of {name}", highlight=False)


@app.command()
def index(runbooks: RunbooksOpt = None) -> None:
    """Build or update the routing index of a pack (only changed runbooks are re-embedded)."""
    from core.pack import load_pack
    from vectorstore.embeddings import MiniLMEmbedder
    from vectorstore.index import RunbookIndex, open_client

    settings = _settings(runbooks)
    try:
        pack = load_pack(settings.runbooks)
        client = open_client(settings.chroma_dir, url=settings.chroma_url)
    except TieroneError as exc:
        _fail(exc)
    index = RunbookIndex(client, pack, MiniLMEmbedder(), progress=_training_bar)
    report = index.sync()
    head = {
        "trained": f"routing head trained and cached ({index.head_file()})",
        "cached": "routing head unchanged (from the cache)",
        "none": f"scorer {pack.policy.routing.scorer} (nothing to train)",
    }[report.head]
    console.print(
        f"indexed {settings.runbooks}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.removed)} removed, {report.unchanged} unchanged; {head}",
        highlight=False,
    )


@app.command()
def chat(runbooks: RunbooksOpt = None) -> None:
    """Talk to the bot in the terminal; demo mail (one-time codes) is shown as it is sent."""
    from app.runtime import open_runtime

    settings = _settings(runbooks)
    try:
        runtime = open_runtime(settings)
    except TieroneError as exc:
        _fail(exc)
    resolver = runtime.resolver
    conversation_id = resolver.start("chat")
    console.print(f"[dim]conversation {conversation_id} · type 'quit' to leave[/dim]")
    seen = len(runtime.outbox.messages(conversation_id))
    while True:
        try:
            text = console.input("[bold cyan]you>[/bold cyan] ")
        except (EOFError, KeyboardInterrupt):
            break
        if text.strip().lower() in ("quit", "exit"):
            break
        try:
            result = resolver.send(conversation_id, text)
        except TieroneError as exc:
            err.print(f"[red]{exc}[/red]")
            continue
        for line in result.replies:
            console.print(f"[bold green]bot>[/bold green] {line}", highlight=False)
        mail = runtime.outbox.messages(conversation_id)
        for message in mail[seen:]:
            console.print(f"[dim]  (mail to {message['to']}: {message['body']})[/dim]", highlight=False)
        seen = len(mail)
        if result.handoff and not result.replies:
            console.print("[dim]  (passed to the technician)[/dim]")


@runbooks_app.command("lint")
def runbooks_lint(folder: Annotated[Path, typer.Argument(help="Runbook pack folder.")]) -> None:
    """Check a pack; name every problem with its file and field."""
    from core.pack import lint_pack, pack_warnings

    pack, problems = lint_pack(folder)
    for problem in problems:
        console.print(f"[red]{problem.file}[/red]: [bold]{problem.field}[/bold]: {problem.message}", highlight=False)
    if pack is None:
        console.print(f"{len(problems)} problem(s) in {folder}")
        raise typer.Exit(1)
    for warning in pack_warnings(pack):
        console.print(
            f"[yellow]warning: {warning.file}[/yellow]: [bold]{warning.field}[/bold]: {warning.message}",
            highlight=False,
        )
    tools = f", tools.yaml valid ({len(pack.tools.tools)} tools)" if pack.tools else ""
    console.print(f"ok: {len(pack.runbooks)} runbooks in {folder}, policy.yaml valid{tools}")


def _calibration_probes(index: Any, out_of_scope: list[Path] | None, cases: Path | None) -> tuple[list[Any], list[str]]:
    """Known and out-of-scope probes for `runbooks calibrate` and `eval import`, and notes on them."""
    from eval.calibrate import known_probes, load_probe_file, text_probes
    from eval.cases import OTP, load_case_file
    from vectorstore.scorer import bundled_out_of_scope

    notes: list[str] = []
    points = known_probes(index) + text_probes(index, bundled_out_of_scope("check"))
    for path in out_of_scope or []:
        points += text_probes(index, load_probe_file(path))
    if cases is not None:
        texts: list[str] = []
        truths: list[str | None] = []
        skipped = 0
        for case in load_case_file(cases).cases:
            single = len(case.texts) == 1 and case.texts[0] != OTP
            if single and not case.expect.handoff and case.expect.runbook in index.pack.runbooks:
                texts.append(case.texts[0])
                truths.append(case.expect.runbook)
            elif single and case.expect.handoff and case.expect.runbook is None:
                texts.append(case.texts[0])
                truths.append(None)
            else:
                skipped += 1
        points += text_probes(index, texts, truths)
        if skipped:
            notes.append(f"{skipped} case(s) of {cases} left out: only single-turn cases expecting a runbook or none")
        if not any(t is None for t in truths):
            notes.append(f"{cases} has no case expecting a handoff with no runbook: only the generic set probes that")
    return points, notes


@runbooks_app.command("calibrate")
def runbooks_calibrate(
    folder: Annotated[Path, typer.Argument(help="Runbook pack folder.")],
    target: Annotated[float, typer.Option("--target", help="Highest wrong-resolution rate to accept.")] = 0.05,
    out_of_scope: Annotated[
        list[Path] | None,
        typer.Option("--out-of-scope", help="Text file of real out-of-scope messages, one a line. Repeatable."),
    ] = None,
    cases: Annotated[
        Path | None, typer.Option("--cases", help="Case file: its single-turn cases become probes too.")
    ] = None,
    write: Annotated[bool, typer.Option("--write", help="Write the suggestion into the pack's policy.yaml.")] = False,
) -> None:
    """Suggest routing thresholds: wrong resolutions against the share handed to a person, on the whole curve."""
    from core.pack import load_pack
    from eval.calibrate import confusions, recommend, sweep, warnings_for
    from eval.importer import write_policy
    from vectorstore.embeddings import MiniLMEmbedder
    from vectorstore.index import RunbookIndex, open_client

    try:
        pack = load_pack(folder)
        index = RunbookIndex(open_client(None), pack, MiniLMEmbedder(), progress=_training_bar)
        index.sync()
        points, notes = _calibration_probes(index, out_of_scope, cases)
    except (TieroneError, OSError) as exc:
        _fail(exc)
    settings = sweep(points)
    best = recommend(settings, target)
    routing = pack.policy.routing
    known = sum(1 for p in points if p.known)
    table = Table(
        title=f"Calibration of {folder} ({pack.policy.routing.scorer} scorer; {known} known probes, "
        f"{len(points) - known} out of scope; min_margin {best.min_margin:g})"
    )
    for column in ("min_score", "known routed right", "out of scope handed off", "wrong resolutions", "handed off"):
        table.add_column(column, justify="right")
    for s in settings:
        suggested = s == best
        current = abs(s.min_score - routing.min_score) < 1e-9 and s.min_margin == best.min_margin
        if s.min_margin != best.min_margin or not (round(s.min_score * 100) % 5 == 0 or suggested or current):
            continue
        wrong = "-" if s.wrong_rate is None else f"{s.wrong_rate:.3f}"
        mark = " suggested" if suggested else (" current" if current else "")
        style = "bold green" if suggested else None
        table.add_row(
            f"{s.min_score:.2f}{mark}",
            f"{s.known_accuracy:.3f}",
            f"{s.unknown_recall:.3f}",
            wrong,
            f"{s.handed_off:.3f}",
            style=style,
        )
    console.print(table)
    wrong_probes = confusions(points)
    if wrong_probes:
        confusion = Table(title=f"Examples another runbook takes ({len(wrong_probes)}), scored without themselves")
        for column in ("runbook", "example", "chosen runbook", "score"):
            confusion.add_column(column, overflow="fold")
        for p in wrong_probes[:40]:
            confusion.add_row(p.truth or "", p.text, p.chosen, f"{p.top:.3f}")
        console.print(confusion)
        if len(wrong_probes) > 40:
            console.print(f"[dim]... and {len(wrong_probes) - 40} more[/dim]")
    for note in notes + warnings_for(best, points):
        err.print(f"[yellow]warning:[/yellow] {note}", highlight=False)
    wrong = "-" if best.wrong_rate is None else f"{best.wrong_rate:.3f}"
    console.print(
        f"suggested: routing.min_score {best.min_score:.2f}, routing.min_margin {best.min_margin:.2f} "
        f"(known routed right {best.known_accuracy:.3f}, out of scope handed off {best.unknown_recall:.3f}, "
        f"wrong resolutions {wrong} for a target of {target:g}; "
        f"current {routing.min_score:.2f} / {routing.min_margin:.2f})",
        highlight=False,
    )
    if write:
        floor = min(routing.clarify_floor, best.min_score)
        write_policy(
            folder,
            {"routing": {"min_score": best.min_score, "min_margin": best.min_margin, "clarify_floor": floor}},
        )
        console.print(f"written to {folder / 'policy.yaml'}")


@handoffs_app.command("list")
def handoffs_list(
    status: Annotated[str, typer.Option(help="queued, claimed, resolved, returned or all.")] = "queued",
) -> None:
    """The handoff queue, most urgent first."""
    from agent.handoff import HandoffQueue
    from core.clock import utc_now

    settings = _settings()
    queue = HandoffQueue(_desk(settings), utc_now)
    packets = queue.packets(None if status == "all" else status)  # type: ignore[arg-type]
    table = Table(title=f"Handoffs ({status})")
    for column in ("packet", "priority", "first reply due", "runbook", "reasons", "customer", "summary"):
        table.add_column(column)
    for p in packets:
        table.add_row(
            p.packet_id,
            p.sla.priority,
            p.sla.first_response_due.strftime("%Y-%m-%d %H:%M"),
            p.runbook_id or "-",
            ", ".join(p.reason_codes),
            ("verified " if p.customer.verified else "") + (p.customer.email or "-"),
            p.summary[:60],
        )
    console.print(table)


@handoffs_app.command("show")
def handoffs_show(packet_id: str) -> None:
    """One packet, as JSON."""
    from agent.handoff import HandoffQueue
    from app.notify import Notifier, describe
    from core.clock import utc_now

    settings = _settings()
    queue = HandoffQueue(_desk(settings), utc_now)
    try:
        packet = queue.get(packet_id)
    except TieroneError as exc:
        _fail(exc)
    console.print_json(HandoffQueue.dumps(packet))
    notifier = Notifier.from_settings(settings, utc_now)
    delivery = notifier.delivery(packet_id)
    if notifier.enabled or delivery is not None:
        # On stderr, so that stdout stays one JSON document.
        err.print(describe(delivery, notifier.enabled), highlight=False)


@handoffs_app.command("redeliver")
def handoffs_redeliver(packet_id: str) -> None:
    """Queue a packet for the helpdesk webhook again (after a rejection); the server's worker sends it."""
    from app.notify import Notifier
    from core.clock import utc_now

    notifier = Notifier.from_settings(_settings(), utc_now)
    if not notifier.enabled:
        _fail(TieroneError("no helpdesk webhook is set; set TIERONE_HANDOFF_WEBHOOK_URL first"))
    try:
        notifier.redeliver(packet_id)
    except TieroneError as exc:
        _fail(exc)
    console.print(f"{packet_id} queued for delivery to the helpdesk webhook")


@handoffs_app.command("schema")
def handoffs_schema() -> None:
    """Print the handoff packet's JSON Schema."""
    from agent.handoff import HandoffPacket

    sys.stdout.write(json.dumps(HandoffPacket.model_json_schema(), indent=2) + "\n")


def _print_summary(summary: dict[str, Any], comparison: dict[str, Any] | None = None) -> None:
    table = Table(title="Eval summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if comparison:
        table.add_column("before", justify="right")
        table.add_column("change", justify="right")
    for key, value in summary.items():
        row = [key, "-" if value is None else str(value)]
        if comparison:
            delta = comparison["metrics"].get(key)
            row += [str(delta["before"]), f"{delta['delta']:+g}"] if delta else ["", ""]
        table.add_row(*row)
    console.print(table)


def _example_repeats(pack_dir: Path, cases: list[Any]) -> list[str]:
    """Cases whose text is one of the pack's examples: they test nothing."""
    from core.pack import load_pack

    examples = {
        " ".join(e.lower().split()): rid for rid, rb in load_pack(pack_dir).runbooks.items() for e in rb.meta.examples
    }
    warnings = []
    for case in cases:
        for text in case.texts:
            owner = examples.get(" ".join(text.lower().split()))
            if owner:
                warnings.append(f"case {case.id}: {text!r} is an example of {owner}; it tests nothing")
    return warnings


def _with_brain(settings: Settings, brain: str | None, recordings: Path | None, record: bool) -> Settings:
    """Settings with the eval's --brain, --llm-recordings and --record applied."""
    if brain not in (None, "offline", "llm"):
        raise TieroneError(f"--brain must be offline or llm, not {brain!r}")
    if record and recordings is None:
        raise TieroneError("--record needs --llm-recordings FILE to store the answers in")
    if recordings is not None and brain == "offline":
        raise TieroneError("--llm-recordings replays the LLM brain's calls; drop --brain offline")
    if recordings is not None and not record and not recordings.exists():
        raise TieroneError(f"no recordings file at {recordings}; record one with --record against a live endpoint")
    update: dict[str, Any] = {"brain": brain} if brain else {}
    if recordings is not None:
        update |= {"brain": "llm", "llm_recordings": recordings, "llm_record": record}
    return settings.model_copy(update=update)


def _eval_setup(
    runbooks: Path | None,
    cases: Path,
    *,
    brain: str | None,
    recordings: Path | None,
    record: bool,
    gate: list[str] | None,
    only: str | None,
    baseline: Path | None,
) -> tuple[Evaluator, list[Case], list[Gate], dict[str, Any] | None]:
    """Load the cases, gates and baseline and build the evaluator, warning of cases that test nothing.

    Returns:
        The evaluator, the selected cases, the gates (the case file's, then --gate's) and the baseline.

    Raises:
        TieroneError: A bad option, or no case expecting ``only``.
        OSError: A file could not be read.
        json.JSONDecodeError: The baseline is not JSON.
    """
    from eval.cases import load_case_file, parse_gate
    from eval.harness import Evaluator

    settings = _with_brain(_settings(runbooks), brain, recordings, record)
    case_file = load_case_file(cases)
    gates = case_file.gates + [parse_gate(g) for g in gate or []]
    selected = [c for c in case_file.cases if only is None or c.expect.runbook == only]
    if not selected:
        raise TieroneError(f"no case in {cases} expects runbook {only!r}")
    old = json.loads(baseline.read_text(encoding="utf-8")) if baseline else None
    for warning in _example_repeats(settings.runbooks, selected):
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    return Evaluator(settings.runbooks, settings=settings), selected, gates, old


def _print_failures(result: dict[str, Any], comparison: dict[str, Any] | None) -> None:
    """Print the failing cases (those newly failing against the baseline marked) and the newly passing."""
    failed = [row for row in result["cases"] if not row["passed"]]
    if failed:
        table = Table(title=f"Failing cases ({len(failed)})")
        # Ids and runbook ids fold onto more lines rather than end in "…": imported cases share long
        # prefixes ("balance-not-updated-after-…"), and a cut id cannot be told from its neighbours.
        table.add_column("case", overflow="fold")
        table.add_column("handoff")
        table.add_column("runbook", overflow="fold")
        table.add_column("routing (score, runner-up, thresholds)", overflow="fold")
        table.add_column("what went wrong")
        for row in failed:
            new = comparison and row["id"] in comparison["newly_failing"]
            table.add_row(
                ("[red]NEW[/red] " if new else "") + row["id"],
                str(row["handoff"]),
                str(row["runbook"]),
                row.get("routing_note") or f"{row['confidence']:.2f}",
                "; ".join(row["failures"]),
            )
        console.print(table)
    if comparison and comparison["newly_passing"]:
        console.print("newly passing: " + ", ".join(comparison["newly_passing"]))


def _eval_sweep(
    evaluator: Evaluator,
    selected: list[Case],
    cases: Path,
    *,
    workers: int,
    target: float,
    sweep_png: Path | None,
    html: Path | None,
) -> tuple[dict[str, Any], Path | None]:
    """Replay the cases over a range of min_score values, print the curve and draw it where asked.

    Returns:
        The sweep as plain data, and the PNG drawn (None when none was asked for).
    """
    from eval.sweep import default_scores, is_setting, plot, recommend, run_sweep, sweep_to_dict

    png = None
    if not any(c.expect.handoff for c in selected):
        err.print(
            f"[yellow]warning:[/yellow] no case in {cases} expects a handoff: the sweep cannot show what a "
            "threshold lets through that should go to a person; add out-of-scope cases",
            highlight=False,
        )
    current = evaluator.pack.policy.routing.min_score
    points = run_sweep(evaluator, selected, default_scores(current), workers=workers)
    best = recommend(points, target)
    curve = Table(title=f"Sweep of min_score (target: wrong resolutions <= {target:g})")
    for column in ("min_score", "routing", "handoff recall", "wrong resolutions", "containment", "passed"):
        curve.add_column(column, justify="right")
    for point in points:
        mark = (" suggested" if best is not None and is_setting(point, best.min_score) else "") + (
            " current" if is_setting(point, current) else ""
        )
        curve.add_row(
            f"{point.min_score:.2f}{mark}",
            *(
                "-" if v is None else f"{v:.3f}"
                for v in (
                    point.routing_accuracy,
                    point.handoff_recall,
                    point.wrong_resolution_rate,
                    point.containment_rate,
                )
            ),
            f"{point.passed}/{point.cases}",
            style="bold green" if best is not None and is_setting(point, best.min_score) else None,
        )
    console.print(curve)
    # The curve is drawn only where asked (--sweep-png, or beside --html): never into the working folder.
    if sweep_png or html:
        png = plot(
            points,
            current=current,
            recommended=best,
            target=target,
            out=sweep_png or (html.with_suffix(".sweep.png") if html else Path("sweep.png")),
        )
    sweep_data = sweep_to_dict(points, current, best, target)
    console.print(
        f"sweep: {len(points)} settings"
        + (f", drawn in {png}" if png else "")
        + "; "
        + (
            f"min_score {best.min_score:.2f} keeps wrong resolutions at {best.wrong_resolution_rate} "
            f"(target {target}) with containment {best.containment_rate}"
            if best
            else f"no setting reaches a wrong-resolution rate of {target}"
        ),
        highlight=False,
    )
    return sweep_data, png


def _write_reports(
    result: dict[str, Any],
    evaluator: Evaluator,
    *,
    report: Path | None,
    html: Path | None,
    comparison: dict[str, Any] | None,
    sweep_data: dict[str, Any] | None,
    png: Path | None,
) -> None:
    """Write the JSON report and the HTML one, where asked."""
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2), encoding="utf-8")
        console.print(f"report written to {report}")
    if html:
        from eval.html import render_html

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(
            render_html(result, evaluator.pack, comparison=comparison, sweep=sweep_data, sweep_png=png),
            encoding="utf-8",
        )
        console.print(f"HTML report written to {html}")


def _check_gates(result: dict[str, Any], gates: list[Gate]) -> None:
    """Print the gates' verdict; exit 1 when one fails."""
    from eval.scoring import check_gates

    failed_gates = check_gates(result["summary"], gates)
    for line in failed_gates:
        err.print(f"[red]gate failed:[/red] {line}", highlight=False)
    if gates and not failed_gates:
        console.print("gates: " + ", ".join(str(g) for g in gates) + " all hold")
    if failed_gates:
        raise typer.Exit(1)


@eval_app.callback(invoke_without_command=True)
def eval_run(
    ctx: typer.Context,
    cases: Annotated[Path, typer.Option("--cases", help="Case file (.jsonl or .yaml).")] = Path(
        "eval/cases/bundled.jsonl"
    ),
    runbooks: RunbooksOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the JSON report here.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="An earlier JSON report to compare with.")] = None,
    gate: Annotated[
        list[str] | None, typer.Option("--gate", help="METRIC>=X or METRIC<=X; exit 1 when one fails. Repeatable.")
    ] = None,
    only: Annotated[str | None, typer.Option("--only", help="Only cases expecting this runbook.")] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Play each case k times; pass = all k pass.")] = 1,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Cases played at once.")] = 1,
    batch_embeddings: Annotated[
        bool, typer.Option("--batch-embeddings", help="Embed all messages ahead (fast; latency then excludes it).")
    ] = False,
    sweep: Annotated[bool, typer.Option("--sweep", help="Replay over a range of min_score values.")] = False,
    target: Annotated[float, typer.Option("--target", help="Wrong-resolution rate the sweep aims at.")] = 0.05,
    sweep_png: Annotated[Path | None, typer.Option("--sweep-png", help="Where to draw the sweep curve.")] = None,
    brain: Annotated[str | None, typer.Option("--brain", help="offline or llm (default: TIERONE_BRAIN).")] = None,
    llm_recordings: Annotated[
        Path | None, typer.Option("--llm-recordings", help="Replay the LLM's answers from this file (no network).")
    ] = None,
    record: Annotated[
        bool, typer.Option("--record", help="With --llm-recordings: ask the configured endpoint, store its answers.")
    ] = False,
) -> None:
    """Play every case through the graph, print a summary, write the reports, check the gates."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.progress import Progress

    from eval.scoring import compare

    try:
        setup = _eval_setup(
            runbooks,
            cases,
            brain=brain,
            recordings=llm_recordings,
            record=record,
            gate=gate,
            only=only,
            baseline=baseline,
        )
    except (TieroneError, OSError, json.JSONDecodeError) as exc:
        _fail(exc)
    evaluator, selected, gates, old = setup
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("playing cases", total=len(selected))
        result = evaluator.run(
            selected,
            repeat=repeat,
            workers=workers,
            batch_embeddings=batch_embeddings,
            on_case=lambda _: progress.advance(task),
        )
    if batch_embeddings:
        console.print("[dim]messages were embedded ahead in batches: latencies below leave out the embedding[/dim]")
    comparison = compare(result, old) if old else None
    if comparison:
        result["comparison"] = comparison
    _print_failures(result, comparison)
    _print_summary(result["summary"], comparison)
    sweep_data = None
    png = None
    if sweep:
        sweep_data, png = _eval_sweep(
            evaluator, selected, cases, workers=workers, target=target, sweep_png=sweep_png, html=html
        )
        result["sweep"] = sweep_data
    _write_reports(result, evaluator, report=report, html=html, comparison=comparison, sweep_data=sweep_data, png=png)
    _check_gates(result, gates)


@eval_app.command("import")
def eval_import(
    pairs: Annotated[Path, typer.Argument(help="JSON list of [text, intent] pairs (the training split).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write runbooks/ and cases.jsonl into.")],
    test: Annotated[Path | None, typer.Option("--test", help="Test split for the cases (else the rest).")] = None,
    k: Annotated[int, typer.Option("--k", help="Examples per intent put into the runbooks.")] = 10,
    holdout: Annotated[int, typer.Option("--holdout", help="Intents held out as 'nothing fits'.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed for choosing examples and held-out intents.")] = 0,
    calibrate: Annotated[bool, typer.Option(help="Set the pack's thresholds (see `runbooks calibrate`).")] = True,
    target: Annotated[float, typer.Option("--target", help="Wrong-resolution target of the calibration.")] = 0.05,
) -> None:
    """Turn a public intent dataset into a pack plus cases, to measure routing on outside data."""
    from core.pack import load_pack
    from eval.calibrate import recommend, sweep, warnings_for
    from eval.importer import import_intents, write_policy
    from vectorstore.embeddings import MiniLMEmbedder
    from vectorstore.index import RunbookIndex, open_client

    try:
        report = import_intents(pairs, out, k=k, holdout=holdout, seed=seed, test=test)
    except (TieroneError, OSError) as exc:
        _fail(exc)
    console.print(
        f"wrote {report.runbooks} runbooks to {report.pack_dir} and {report.cases} cases to {report.cases_file}; "
        f"held out: {', '.join(report.held_out) or 'none'}",
        highlight=False,
    )
    if calibrate:
        try:
            pack = load_pack(report.pack_dir)
            index = RunbookIndex(open_client(None), pack, MiniLMEmbedder(), progress=_training_bar)
            index.sync()
            points, _ = _calibration_probes(index, None, None)
        except TieroneError as exc:
            _fail(exc)
        best = recommend(sweep(points), target)
        write_policy(
            report.pack_dir,
            {"routing": {"min_score": best.min_score, "min_margin": best.min_margin, "clarify_floor": best.min_score}},
        )
        console.print(
            f"calibrated: min_score {best.min_score:.2f}, min_margin {best.min_margin:.2f} "
            f"(wrong resolutions on the probes {best.wrong_rate or 0.0:.3f}, target {target:g})",
            highlight=False,
        )
        for note in warnings_for(best, points):
            err.print(f"[yellow]warning:[/yellow] {note}", highlight=False)
    console.print(f"next: tierone eval --runbooks {report.pack_dir} --cases {report.cases_file}", highlight=False)


@eval_app.command("init")
def eval_init(
    runbook_id: Annotated[str, typer.Argument(help="The runbook to draft cases for.")],
    runbooks: RunbooksOpt = None,
    count: Annotated[int, typer.Option(help="Single-turn drafts to write.")] = 6,
    out: Annotated[Path | None, typer.Option("--out", help="Append the drafts to this .jsonl (else print).")] = None,
) -> None:
    """Draft cases for a runbook from its examples (rewritten, never verbatim); edit them before use."""
    from core.pack import load_pack
    from eval.drafts import draft_cases

    settings = _settings(runbooks)
    try:
        pack = load_pack(settings.runbooks)
        if runbook_id not in pack.runbooks:
            raise TieroneError(f"no runbook {runbook_id!r} in {settings.runbooks}; `tierone runbooks lint` lists them")
    except TieroneError as exc:
        _fail(exc)
    lines = [json.dumps(d) for d in draft_cases(pack, pack.runbooks[runbook_id], count=count)]
    if out:
        with out.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        console.print(f"appended {len(lines)} draft cases to {out}: read and edit them, then run `tierone eval`")
    else:
        sys.stdout.write("\n".join(lines) + "\n")


def _as_routed(message: str) -> str:
    """The text the service routes: redacted, with the addresses and codes it holds put back."""
    from core.redact import redact_spans
    from core.vault import REVEALED_KINDS

    redacted, pairs = redact_spans(message)
    out, at = [], 0
    for original, mark in pairs:
        if original.kind in REVEALED_KINDS:
            out += [redacted[at : mark.start], message[original.start : original.end]]
            at = mark.end
    return "".join(out) + redacted[at:]


@app.command("try")
def try_message(
    message: Annotated[str, typer.Argument(help="What a customer might write.")],
    runbooks: RunbooksOpt = None,
) -> None:
    """Route one message against the pack: candidates, scores, and what the bot would do."""
    from agent.brains.offline import OfflineBrain
    from agent.nodes import runbook_facts
    from agent.policy import Facts, decide
    from core.pack import load_pack
    from eval.scoring import routing_note
    from vectorstore.embeddings import MiniLMEmbedder
    from vectorstore.index import RunbookIndex, open_client

    settings = _settings(runbooks)
    try:
        pack = load_pack(settings.runbooks)
    except TieroneError as exc:
        _fail(exc)
    # An index in memory: trying a message writes nothing into the working folder.
    index = RunbookIndex(open_client(None), pack, MiniLMEmbedder(), progress=_training_bar)
    index.sync()
    routed = _as_routed(message)
    understanding = OfflineBrain(index).understand(routed, routing_text=routed)
    matched = {c.runbook_id: c.matched for c in index.query(routed, 5)}
    routing = pack.policy.routing
    table = Table(
        title=f"Routing ({routing.scorer} scorer, min_score {routing.min_score}, min_margin {routing.min_margin})"
    )
    for column in ("runbook", "score", "tier", "nearest example"):
        table.add_column(column)
    for c in understanding.candidates:
        rb = pack.runbooks[c.runbook_id]
        table.add_row(c.runbook_id, f"{c.score:.3f}", str(pack.effective_tier(rb)), matched.get(c.runbook_id, ""))
    console.print(table)
    if routed != message:
        console.print(f"routed as: {routed}", highlight=False, markup=False)  # "[card]" is not rich markup
    candidates = [{"runbook_id": c.runbook_id, "score": c.score} for c in understanding.candidates]
    console.print("routing: " + routing_note(candidates, routing.min_score, routing.min_margin), highlight=False)
    decision = decide(Facts(stage="triage", understanding=understanding, runbooks=runbook_facts(pack)), pack.policy)
    console.print(
        f"decision: [bold]{decision.action}[/bold] ({', '.join(decision.reasons)})"
        + (f" on {decision.runbook_id}" if decision.runbook_id else "")
        + f"; sentiment {understanding.sentiment:+.2f}"
        + (", asks for a person" if understanding.wants_human else ""),
        highlight=False,
    )


@app.command()
def forget(
    email: Annotated[str | None, typer.Option("--email", help="Forget every conversation of this address.")] = None,
    conversation: Annotated[str | None, typer.Option("--conversation", help="Forget one conversation.")] = None,
) -> None:
    """Delete a customer's conversations, packets, messages and vault entries; print the audit record."""
    from app.erasure import Eraser
    from app.runtime import open_runtime

    if (email is None) == (conversation is None):
        _fail(TieroneError("give either --email ADDRESS or --conversation ID"))
    try:
        report = Eraser(open_runtime(_settings()).erasure).forget(conversation_id=conversation, email=email)
    except TieroneError as exc:
        _fail(exc)
    print(json.dumps(report.as_dict(), indent=2))


@app.command("vault-key")
def vault_key() -> None:
    """Print a new key for TIERONE_VAULT_KEY (keep it outside the data folder)."""
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())


# -- knowledge gaps and teaching: what L2 resolutions teach the bot (issue 13, parts 4 and 5) -------------

suggestions_app = typer.Typer(help="What L2 resolutions taught: suggested examples and runbooks.")
runbooks_app.add_typer(suggestions_app, name="suggestions")


def _suggestions() -> Any:
    from app.teaching import Suggestions
    from core.clock import utc_now

    return Suggestions(_desk(Settings()), utc_now)


def _when(option: str, value: str | None) -> Any:
    """An ISO date or time from an option (UTC when it names no zone)."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise TieroneError(f"{option} {value!r} is not an ISO date or time (2026-11-01 or 2026-11-01T09:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _gaps(runbooks: Path | None, since: str | None, until: str | None, distance: float) -> list[Any]:
    """The knowledge gaps of the deployment's handoffs in a period (the last 30 days unless told)."""
    from datetime import timedelta

    from agent.handoff import HandoffQueue
    from app.gaps import find_gaps
    from core.clock import utc_now
    from core.pack import load_pack
    from vectorstore.embeddings import MiniLMEmbedder
    from vectorstore.index import RunbookIndex, open_client

    settings = _settings(runbooks)
    start, end = _when("--since", since), _when("--until", until)
    if start is None:
        start = (end or utc_now()) - timedelta(days=30)
    if end is not None and end <= start:
        raise TieroneError(f"--until {until} is not after --since {since or start.isoformat()}; swap them")
    if not 0 < distance < 2:
        raise TieroneError(f"--distance must be between 0 and 2 (cosine distance), not {distance}")
    index = RunbookIndex(
        open_client(settings.chroma_dir, url=settings.chroma_url), load_pack(settings.runbooks), MiniLMEmbedder()
    )
    index.sync()
    return find_gaps(HandoffQueue(_desk(settings), utc_now), index, since=start, until=end, distance=distance)


SinceOpt = Annotated[str | None, typer.Option("--since", help="Start of the period, ISO (default: 30 days ago).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End of the period, ISO (default: now).")]
DistanceOpt = Annotated[float, typer.Option("--distance", help="Largest cosine distance within a gap.")]


@runbooks_app.command("gaps")
def runbooks_gaps(
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    distance: DistanceOpt = 0.6,
    runbooks: RunbooksOpt = None,
) -> None:
    """The questions no runbook answered: handed-off messages clustered, the largest gap first."""
    try:
        gaps = _gaps(runbooks, since, until, distance)
    except TieroneError as exc:
        _fail(exc)
    if as_json:
        sys.stdout.write(json.dumps([g.as_dict() for g in gaps], indent=2) + "\n")
        return
    if not gaps:
        console.print("no knowledge gaps: no handoff of the period was for want of a runbook")
        return
    table = Table(title=f"Knowledge gaps ({len(gaps)})")
    for column in ("gap", "size", "examples", "nearest runbook"):
        table.add_column(column, overflow="fold")
    for g in gaps:
        nearest = f"{g.nearest_runbook} ({g.nearest_score:.2f})" if g.nearest_runbook else "-"
        # Redacted text holds "[email]" and the like: escaped, or rich would read them as markup.
        table.add_row(str(g.rank), str(g.size), escape("\n".join(g.examples[:3])), nearest)
    console.print(table)
    console.print("`tierone runbooks draft --gap N --out FILE` writes a runbook skeleton from gap N")


@runbooks_app.command("draft")
def runbooks_draft(
    gap: Annotated[int, typer.Option("--gap", min=1, help="The gap's number in `tierone runbooks gaps`.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the skeleton here (else print it).")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    distance: DistanceOpt = 0.6,
    runbooks: RunbooksOpt = None,
) -> None:
    """Write a runbook skeleton from a gap: its messages as examples, TODO where an author must write."""
    from app.gaps import draft_runbook

    try:
        gaps = _gaps(runbooks, since, until, distance)
        if gap > len(gaps):
            raise TieroneError(f"--gap {gap}: the period has {len(gaps)} gap(s); `tierone runbooks gaps` lists them")
        if out is not None and out.exists():
            raise TieroneError(f"--out {out} exists already; choose another file")
    except TieroneError as exc:
        _fail(exc)
    text = draft_runbook(gaps[gap - 1])
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"draft written to {out}: replace every TODO, then `tierone runbooks lint` the pack")


@suggestions_app.callback(invoke_without_command=True)
def suggestions_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    state: Annotated[str, typer.Option(help="open, accepted, rejected or all.")] = "open",
) -> None:
    """List the suggestions L2 technicians left when resolving handoffs."""
    if ctx.invoked_subcommand is not None:
        return
    if state not in ("open", "accepted", "rejected", "all"):
        _fail(TieroneError(f"--state must be open, accepted, rejected or all, not {state!r}"))
    found = [s.as_dict() for s in _suggestions().list(state)]
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    if not found:
        console.print(f"no {state} suggestions" if state != "all" else "no suggestions")
        return
    table = Table(title=f"Suggestions ({state})")
    for column in ("id", "kind", "runbook", "text", "from", "state"):
        table.add_column(column, overflow="fold")
    for s in found:
        table.add_row(
            s["id"],
            s["kind"],
            s["runbook_id"],
            escape(s["text"]),
            escape(f"{s['technician']} {s['packet_id']}"),
            s["state"],
        )
    console.print(table)


@suggestions_app.command("reject")
def suggestions_reject(
    suggestion_id: Annotated[str, typer.Argument(help="The suggestion, e.g. SUG-3.")],
    why: Annotated[str, typer.Option("--why", help="Why it is rejected; kept with the suggestion.")],
) -> None:
    """Reject a suggestion, recording why."""
    try:
        done = _suggestions().decide(suggestion_id, "rejected", why)
    except TieroneError as exc:
        _fail(exc)
    console.print(f"{done.id} rejected: {escape(done.why or '')}")


@suggestions_app.command("accept")
def suggestions_accept(
    suggestion_id: Annotated[str, typer.Argument(help="The suggestion, e.g. SUG-3.")],
    runbooks: Annotated[Path, typer.Option("--runbooks", help="The runbook pack folder to write it into.")],
    cases: Annotated[Path, typer.Option("--cases", help="The .jsonl case file its regression case joins.")],
    force: Annotated[bool, typer.Option("--force", help="Keep it even when it breaks a gate that held.")] = False,
    category: Annotated[
        str | None, typer.Option("--category", help="A new runbook's category (else the technician's).")
    ] = None,
) -> None:
    """Write a suggestion into the pack and its case into the case file once the pack lints; print what changed."""
    from eval.teach import accept

    try:
        done = accept(_suggestions(), suggestion_id, runbooks, cases, force=force, category=category)
    except (TieroneError, OSError) as exc:
        _fail(exc)
    for line in done.changes():
        console.print(f"  {escape(line)}", highlight=False)
    for line in done.broken_gates:
        err.print(f"[yellow]gate broken, kept because of --force:[/yellow] {escape(line)}", highlight=False)
    console.print(f"{done.suggestion.id} accepted: wrote " + ", ".join(str(p) for p in done.files), highlight=False)


# -- the support lead: insights, the monthly audit, the simulator (issue 13) -------------------------


@app.command()
def insights(
    since: Annotated[str | None, typer.Option("--since", help="First moment (ISO) of the period.")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Judge the 72-hour and time-limit rules at (ISO).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    runbooks: RunbooksOpt = None,
) -> None:
    """Honest resolution counts per episode, by category, with handoff reasons and desk times."""
    from agent.handoff import HandoffQueue
    from app.gaps import gaps_provider
    from app.insights import Period, open_insights, parse_moment, summary_lines
    from core.clock import utc_now
    from core.pack import load_pack
    from vectorstore.embeddings import MiniLMEmbedder
    from vectorstore.index import RunbookIndex, open_client

    settings = _settings(runbooks)
    try:
        pack = load_pack(settings.runbooks)

        def routing_index() -> RunbookIndex:  # opened only when the period has handoffs to cluster
            index = RunbookIndex(open_client(settings.chroma_dir, url=settings.chroma_url), pack, MiniLMEmbedder())
            index.sync()
            return index

        gaps = gaps_provider(HandoffQueue(_desk(settings), utc_now), routing_index)
        period = Period.of(parse_moment(since, "--since"), parse_moment(as_of, "--as-of"))
        report = open_insights(settings, pack, gaps).report(period)
    except TieroneError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for line in summary_lines(report):
            typer.echo(line)


@app.command()
def audit(
    month: Annotated[str, typer.Option("--month", help="The month to audit, YYYY-MM.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write it: FILE.md or FILE.html.")],
    runbooks: RunbooksOpt = None,
) -> None:
    """The monthly tier-boundary audit per category; it names policy.yaml lines and never changes them."""
    from app.audit import build_audit, write_audit
    from app.insights import open_insights
    from core.pack import load_pack

    settings = _settings(runbooks)
    try:
        pack = load_pack(settings.runbooks)
        report = build_audit(open_insights(settings, pack), pack, month)
        write_audit(report, out)
    except TieroneError as exc:
        _fail(exc)
    changes = [c for c in report["categories"] if c["recommendation"]["action"] not in ("keep", "too_few")]
    typer.echo(f"wrote {out}: {len(report['categories'])} categories, {len(changes)} recommend a change")


@app.command()
def simulate(
    start: Annotated[str, typer.Option("--start", help="First day of the simulated traffic (ISO date).")],
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="How many days it spreads over.")] = 30,
    conversations: Annotated[int, typer.Option("--conversations", min=1, help="How many conversations.")] = 400,
    seed: Annotated[int, typer.Option("--seed", help="The same seed plays the same month.")] = 13,
    cases: Annotated[Path | None, typer.Option("--cases", help="Eval cases to play (default: bundled).")] = None,
    runbooks: RunbooksOpt = None,
) -> None:
    """Seed the deployment's data with a month of customers and technicians (the demo, /insights, the audit)."""
    from app.insights import parse_moment
    from app.runtime import open_runtime
    from eval.cases import load_cases
    from eval.simulate import SimClock, Simulator, summary

    settings = _settings(runbooks)
    try:
        first = parse_moment(start, "--start")
        if first is None:
            raise TieroneError("--start needs a date, e.g. 2026-11-01")
        played = load_cases(cases or Path(__file__).parent / "eval" / "cases" / "bundled.jsonl")
        clock = SimClock(first)
        runtime = open_runtime(settings, clock=clock)
        tally = Simulator(runtime, clock, played, seed).run(first, days, conversations)
    except TieroneError as exc:
        _fail(exc)
    typer.echo(json.dumps(summary(tally)))


@app.command()
def migrate(
    from_sqlite: Annotated[
        Path | None,
        typer.Option(
            "--from-sqlite",
            metavar="DATA_DIR",
            help="Copy the embedded deployment in this data folder into TIERONE_DATABASE_URL's PostgreSQL.",
        ),
    ] = None,
) -> None:
    """Bring every store's schema up to date on the configured database, and say what was applied.

    With TIERONE_DATABASE_URL set, the PostgreSQL database (LangGraph's checkpoint tables included),
    which `tierone serve` needs before it starts; without it, the SQLite files in TIERONE_DATA_DIR.
    With --from-sqlite, then copy an embedded deployment's data into that PostgreSQL (a second run
    copies nothing) and print what was copied per table.
    """
    from app.runtime import migrate_databases
    from core.db import DatabaseUrl

    settings = _settings()
    url = settings.database_url.get_secret_value() if settings.database_url else None
    where = f"PostgreSQL {DatabaseUrl(url).safe}" if url else f"SQLite files in {settings.data_dir}"
    if from_sqlite is not None:
        from app.move import move_from_sqlite

        try:
            copied = move_from_sqlite(from_sqlite, settings)
        except TieroneError as exc:
            _fail(exc)
        for row in copied:
            typer.echo(f"{row.source} {row.table}: copied {row.copied}, already there {row.present}")
        total = sum(row.copied for row in copied)
        typer.echo(f"{where}: copied {total} rows from {from_sqlite}" if total else f"{where}: nothing new to copy")
        typer.echo("The routing index is not copied: the service rebuilds it from the runbook pack when it starts.")
        return
    try:
        applied = migrate_databases(settings)
    except TieroneError as exc:
        _fail(exc)
    ran = {component: versions for component, versions in applied.items() if versions}
    for component, versions in sorted(ran.items()):
        typer.echo(f"{component}: applied {', '.join(str(v) for v in versions)}")
    typer.echo(f"{where}: {'up to date' if ran else 'already up to date; nothing applied'}")


def main() -> None:
    """Entry point of the `tierone` command."""
    app()


if __name__ == "__main__":
    main()
