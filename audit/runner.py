"""`audit run`: recipe -> model and data -> per-example table -> suites -> report -> gates -> outputs."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import AuditError, InvalidEvaluation, RecipeError
from audit.recipe import Recipe, load_recipe
from audit.recipe.load import check_gate_groups
from audit.recipe.fields import suggest
from audit.report.records import Check


@dataclass
class RunOptions:
    recipe: Path
    model_path: Path | None
    # None: the run writes nothing (the Python API, ``audit.run``): no folder, no resume cache; the report
    # and the per-example table stay in memory until ``Report.save``
    out: Path | None = Path("out")
    suites: list[str] = field(default_factory=list)
    seed: int | None = None
    device: str | None = None
    batch_size: int | None = None
    quiet: bool = False
    trust_checkpoint: bool = False
    resume: bool = False
    cache: bool = True  # save finished rows in --out/cache (--no-cache: not)
    pages: bool = True  # write report.html and junit.xml (not in `audit repro`'s child runs)
    # an already validated recipe to run instead of reading ``recipe`` (``audit harden``'s before/after
    # audits: the user's recipe with stronger attacks); ``recipe`` still names the file for messages
    recipe_obj: Recipe | None = None
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    # the model and the data already in memory (``audit.api``: an nn.Module and arrays, validated there by
    # the same functions as files); None: loaded from ``model_path`` and the recipe's [data]
    model_obj: Any = None  # audit.loading.model.LoadedModel
    data_obj: Any = None  # audit.engine.data.Dataset


def make_progress(quiet: bool):
    """The progress factory (``progress(total=, desc=)`` bars, ``progress.phase(what)`` contexts): tqdm
    bars on a terminal, plain lines with heartbeats when stderr is not one (CI logs), nothing under
    --quiet; AUDIT_PROGRESS overrides the choice (``audit.engine.progress``)."""
    from audit.engine.progress import make_progress as make

    return make(quiet)


def choose_suites(recipe: Recipe, requested: list[str]) -> list[str]:
    from audit.suites import get_suite, suite_names

    known = suite_names()
    for s in requested:
        if s not in known:
            raise RecipeError(f"--suite {s}: unknown suite {suggest(s, known)}")
    # Command-only suites (repro) have their own command; they name metrics for gates but never run here.
    for s in requested or recipe.section("run")["suites"] or []:
        if get_suite(s).command_only:
            where = f"--suite {s}" if requested else f"{recipe.path}: [run] suites"
            raise RecipeError(f"{where}: the {s!r} suite is not run by `audit run`; use `audit {s}`")
    if requested:
        chosen = set(requested)
    elif recipe.section("run")["suites"]:
        chosen = set(recipe.section("run")["suites"])
    else:
        chosen = {s for s in known if s in recipe.present and not get_suite(s).command_only} or {"performance"}
    return [s for s in known if s in chosen]  # registry order


def excused_suites(recipe: Recipe, requested: list[str], chosen: list[str]) -> list[str]:
    """Suites whose gates may go unchecked in this run: those left out on purpose (--suite or [run] suites)
    and command-only ones (repro, from `audit repro`). A gate on any other suite that did not run blocks:
    a recipe that gates on robustness without a [robustness] table is a mistake, not a pass."""
    from audit.suites import get_suite, suite_names

    deliberate = bool(requested) or bool(recipe.section("run")["suites"])
    return [s for s in suite_names() if s not in chosen and (deliberate or get_suite(s).command_only)]


def execute(opts: RunOptions) -> tuple[dict[str, Any], int]:
    """Run the audit and write the outputs. Returns (report, exit code).

    --out is opened (locked, the previous run moved aside, a "did not finish" placeholder written) before
    anything else, so that any failure from here on, a bad --device as much as NaN logits, leaves a failure
    report instead of the previous model's.

    Under torchrun (WORLD_SIZE > 1) every rank runs this: rank 0 holds --out and writes the report; the other
    ranks fill their rows (and the cache) and write nothing else. A rank that fails tells the others
    (``audit.engine.distributed``), so every rank stops with one line naming it."""
    from audit.engine.distributed import World, env_world_size
    from audit.report.outdir import RunFolder

    import_torch()  # before --out is held: a Ctrl-C during it leaves the folder untouched
    world = World.from_env() if env_world_size() > 1 else World()
    try:
        if world.is_main:
            with RunFolder.open(opts.out, "run", opts.argv,
                                {"model": opts.model_path, "recipe": opts.recipe}, pages=opts.pages) as folder:
                report, code, _ = _execute(opts, folder, world)
        else:
            with _sigterm_raises():
                report, code, _ = _execute(opts, None, world)
        world.close()
    except BaseException as e:
        if not world.distributed:
            raise
        raise _rank_error(e, world) from None
    finally:
        from audit.engine.progress import release_all

        release_all()  # the run's progress lines end with it
    return report, code


def execute_in_memory(opts: RunOptions) -> tuple[dict[str, Any], Any]:
    """The same audit as :func:`execute`, in this process, writing nothing (``opts.out`` is None): no output
    folder, no resume cache. Returns the report (stamped with a run id, as a finished run's) and the
    per-example table, for ``audit.Report`` (which writes the usual files only when saved)."""
    from audit.engine.distributed import World
    from audit.engine.progress import release_all

    import_torch()
    try:
        report, _, table = _execute(opts, None, World())
    finally:
        release_all()
    return report, table


def _rank_error(e: BaseException, world: Any) -> BaseException:
    """The one line a rank prints when a torchrun job stops: its own error (posted for the others, with
    its rank), another rank's (RankFailed, already worded), or torchrun's SIGTERM after a rank vanished."""
    from audit.engine.distributed import RankFailed
    from audit.errors import Terminated, error_line

    if isinstance(e, RankFailed):  # posted too (as a follow-on): a rank that torchrun then stops can say why
        world.post_error(str(e), int(e.exit_code), follow_on=True)
        world.abort()
        return e
    line, code = error_line(e)
    if not isinstance(e, (AuditError, InvalidEvaluation, KeyboardInterrupt)):
        # an internal error here may only be the echo of another rank's failure (a collective whose peer
        # left raises "connection closed"): if a rank posted a failure of its own, that is the cause
        posted = world.posted_error(wait_s=2.0)
        if posted is not None:
            r, pcode, pline = posted
            failed = RankFailed(f"rank {world.rank}: stopped because rank {r} failed: {pline}", pcode)
            world.post_error(str(failed), pcode, follow_on=True)
            world.abort()
            return failed
    if isinstance(e, Terminated):
        posted, gone = world.first_error(), world.lost_ranks()
        line = f"rank {world.rank}: terminated (SIGTERM): torchrun stops every rank when one exits"
        if posted:
            line += f"; it stopped after {posted}"
        elif gone:
            line += f"; gone: {gone}, killed or crashed (see torchrun's summary for its exit code)"
        else:
            line += "; torchrun's summary names the rank that exited"
    else:
        line = f"rank {world.rank}: {line}"
        world.post_error(line, code)
    world.abort()
    return RankFailed(line, code)


class _sigterm_raises:
    """On ranks other than 0 (which have no RunFolder to install it): SIGTERM raises Terminated, so a rank
    stopped by torchrun says so in one line instead of dying silently."""

    def __enter__(self) -> None:
        import signal

        from audit.errors import Terminated

        def on_sigterm(signum: int, frame: Any) -> None:  # noqa: ARG001
            raise Terminated()

        self._old = signal.signal(signal.SIGTERM, on_sigterm)

    def __exit__(self, *exc: Any) -> None:
        import signal

        signal.signal(signal.SIGTERM, self._old)


def import_torch() -> None:
    """Import torch with SIGINT and SIGTERM held back until it is done: a signal that comes meanwhile is
    handed to the handler it would have met (KeyboardInterrupt, audit's Terminated, or the default action)
    right after, so the run records its failure as usual.

    Why: Ctrl-C landing inside torch's import (about 1.5 CPU s, much of it C++ start-up running Python code
    through the C API) can leave the interpreter marked as killed by SIGINT although audit caught the
    KeyboardInterrupt (the process then dies by the signal instead of exiting 130), or hang it at exit.
    Python's handlers run in the main thread only, so elsewhere torch is imported plainly."""
    if "torch" in sys.modules:
        return
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        import torch  # noqa: F401
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    # a signal mask would not do: numpy's BLAS threads already exist and would take the signal instead
    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        import torch  # noqa: F401, F811
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            handler = old[s]
            if callable(handler):
                handler(s, None)  # raises (KeyboardInterrupt, Terminated)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), s)  # the default action, now that torch is whole


def _execute(opts: RunOptions, folder: Any, world: Any) -> tuple[dict[str, Any], int, Any]:
    import re

    import_torch()  # before anything below imports it

    from audit.engine import shard
    from audit.engine.cache import RowCache
    from audit.engine.inference import probe_model
    from audit.engine.wrapper import WrappedModel, resolve_device
    from audit.loading.data import load_data
    from audit.loading.model import load_checkpoint
    from audit.report.build import assemble
    from audit.report.provenance import provenance
    from audit.repro.capture import DeterminismCapture
    from audit.suites import FillContext, get_suite

    if opts.device is not None and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", opts.device):
        raise AuditError(f"--device {opts.device}: expected auto, cpu, cuda or cuda:N")
    # AUDIT_DETERMINISM_CAPTURE=1 (set by `audit repro` for its capture run): deterministic algorithms in
    # warn-only mode, alerts recorded per phase, report["determinism"]. Otherwise a no-op.
    capture = DeterminismCapture.from_env()
    t0 = time.perf_counter()
    from audit.report.outdir import new_run_id, now_iso

    created = folder.created if folder is not None else now_iso()
    recipe = opts.recipe_obj if opts.recipe_obj is not None else load_recipe(opts.recipe)
    run_cfg = recipe.section("run")
    world.timeout_s = float(run_cfg["rank_timeout"])
    seed = opts.seed if opts.seed is not None else run_cfg["seed"]
    requested = opts.device or run_cfg["device"]
    if world.distributed and requested in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():  # each rank on its own GPU
            requested = f"cuda:{world.local_rank}"
            torch.cuda.set_device(world.local_rank)
    device = resolve_device(requested, None if opts.device else f"{recipe.path}: [run] device = {run_cfg['device']!r}")
    batch_size = opts.batch_size or run_cfg["batch_size"]
    suites = choose_suites(recipe, opts.suites)
    model_cfg = recipe.section("model")
    progress = make_progress(opts.quiet or not world.is_main)  # heartbeats: audit.engine.distributed.pulse

    with world.beating("loading the model and the data"):
        loaded = opts.model_obj if opts.model_obj is not None else load_checkpoint(
            opts.model_path, model_cfg, recipe.base_dir, recipe.path, trust=opts.trust_checkpoint)
        data = opts.data_obj if opts.data_obj is not None else load_data(recipe)
    model = WrappedModel(loaded.module, model_cfg["mean"], model_cfg["std"], model_cfg["input_bounds"],
                         model_cfg["num_classes"]).to(device)
    probe_model(model, data, device, model_cfg["num_classes"])
    facts = make_facts(recipe, data, seed, batch_size)
    check_gate_groups(recipe, facts.categories)  # a gate on a group the data lacks: exit 2 now, not ERROR later
    # every suite's recipe section against the data, before any suite does any work
    plans = {name: get_suite(name).validate(recipe.section(name), facts) for name in suites}

    block = shard.block_size(run_cfg["block_rows"], len(data), batch_size,
                             *[recipe.section(n).get("batch_size") for n in suites],
                             *[recipe.section(n).get("autoattack_chunk") for n in suites if n == "robustness"])
    if opts.resume and not opts.cache:
        raise AuditError("--resume and --no-cache contradict each other: --resume reads the cache")
    # Every rank computes the key and reads only entries filed under it, so a node whose --out is not
    # shared never reuses rows of another audit; rank 0 prepares (empties, or checks on --resume) the
    # folder it sees before anyone writes, and without --resume no rank reads anything.
    key = cache_key(recipe, loaded, data, seed, block, batch_size, device)
    if opts.out is None:  # in memory: nothing is written, nothing resumed
        if opts.resume or opts.cache:
            raise AuditError("a run without an output folder has no resume cache: pass cache=False, resume=False")
        cache = RowCache(Path("cache"), key, _notice, enabled=False)
    elif not opts.cache:
        import shutil

        if world.is_main:  # a stale cache from an earlier run must not be resumed from later
            shutil.rmtree(opts.out / "cache", ignore_errors=True)
        cache = RowCache(opts.out / "cache", key, _notice, enabled=False)
    elif world.is_main:
        cache = RowCache.prepare(opts.out, key, opts.resume, _notice)
    else:
        cache = RowCache(opts.out / "cache", key, _notice, readable=opts.resume)
    world.wait_all("output folder and cache ready")  # rank 0 moved the previous run aside, cleared the cache
    stages = _Stages(world, cache, opts.quiet or not world.is_main, len(data))

    timing: dict[str, float] = {}
    t = time.perf_counter()
    needs_logits = [n for n in suites if get_suite(n).needs_logits]
    blocks = shard.blocks(len(data), block)
    with capture.phase("inference"), progress.phase(f"inference ({len(data)} examples)"):
        cols, _, _ = stages.run("core", blocks, lambda pos, _task, _rows: core_fill(model, data, pos, device,
                                                                                     batch_size), dense=True)
        raw_logits = cols["logits"]
        _require_finite(raw_logits, data.index)  # on the whole table, so the counts are the data's
        timing["inference_s"] = time.perf_counter() - t
        core_checks, logits = core_validity_checks(raw_logits, cols["check:repeat_max_diff"], needs_logits,
                                                   cols["check:repeat_flip"])
    table = build_core_table(data, logits, cols)
    from audit.engine.baseline import better_than_baseline  # constant predictions, worse than chance

    core_checks.append(better_than_baseline(table["label"], table["pred"], facts.class_names))
    if loaded.trusted:
        core_checks.append(Check("trusted_checkpoint", "warn",
                                 f"The checkpoint ({loaded.format}) was loaded with --trust-checkpoint: loading it "
                                 "could run code on this machine. Prefer a state_dict or safetensors file."))
    from_file = data.meta.get("categories_from_file")
    if from_file:
        listed = "; ".join(f"{k}: {', '.join(v)}" for k, v in from_file.items())
        core_checks.append(Check("one_hot_categories_pinned", "warn",
                                 f"The csv's one-hot categories were read from this file ({listed}). If the model "
                                 "was trained on a file with other categories, its inputs are shifted and every "
                                 "number here is wrong. Pin them in training's order: [data] categorical = "
                                 "{ column = [...] }."))

    fc = FillContext(model=model, data=data, device=device, seed=seed, batch_size=batch_size, progress=progress,
                     facts=facts)
    partials: dict[str, list[dict[str, Any]]] = {}
    results = []
    for name in suites:
        suite = get_suite(name)
        t = time.perf_counter()
        plan, attempt = plans[name], 0
        while True:  # once, or again with a stronger plan when the suite says its measurement was too weak
            unit = name if attempt == 0 else f"{name}~{attempt}"
            with capture.phase("attack_gradient" if suite.needs_logits else "inference", suite=name), \
                    progress.phase(f"suite {name}" + (f" (again, stronger: attempt {attempt + 1})" if attempt else "")):
                result = _run_suite(suite, unit, plan, fc, stages, blocks, table, partials, timing, world, facts)
            stronger = suite.escalate(plan, result, facts) if (suite.escalate and world.is_main) else None
            if suite.escalate and world.distributed:  # every rank re-runs, or none: rank 0 decides
                stronger = world.allgather_object(stronger, f"{name}: escalate?")[0]
            if stronger is None:
                break
            plan, attempt = stronger, attempt + 1
        timing[f"{name}_s"] = time.perf_counter() - t
        if result is not None:
            timing.update({f"{name}.{part}_s": seconds for part, seconds in result.timing.items()})
            results.append(result)
    if not world.is_main:
        return {}, 0, None

    extra: dict[str, Any] = {"suites_run": suites}
    if capture.enabled:
        extra["determinism"] = capture.finish(model, data.x, device, batch_size, raw_logits, recipe.section("repro"))
    prov = provenance(device, opts.argv, seed)
    prov["created"] = created
    prov["sharding"] = {"world_size": world.size, "hosts": world.hosts or None, "rule": shard.RULE,
                        "block_rows": block, "backend": world.backend}
    prov["resume"] = stages.counts if opts.resume else None
    timing["total_s"] = time.perf_counter() - t0
    report = assemble(
        provenance=prov,
        # an in-memory module (audit.run) was built by its caller, not by the recipe's factory
        model={**loaded.to_json(), "factory": None if loaded.module_class else model_cfg["factory"],
               "num_classes": model_cfg["num_classes"]},
        data={**data.meta, "class_names": model_cfg["class_names"] or [str(i) for i in range(model_cfg["num_classes"])]},
        recipe=recipe.to_json(),
        results=results,
        core_checks=core_checks,
        gates=recipe.gates,
        downgrade=recipe.section("validity")["downgrade"],
        timing={k: round(v, 3) for k, v in timing.items()},
        excused=excused_suites(recipe, opts.suites, suites),
        extra=extra,
    )
    if folder is None:  # in memory (audit.run): a finished run's report, written nowhere until saved
        from audit.report.outdir import stamp_report

        return stamp_report(report, new_run_id()), report["exit_code"], table
    with progress.phase("writing the report"):
        report = folder.write(report, table)
    # finished: the rows are in examples.npz now; the cache only serves a run that did not get here
    import shutil

    if opts.cache:
        shutil.rmtree(cache.root, ignore_errors=True)
    return report, report["exit_code"], table


def _run_suite(suite: Any, unit: str, plan: Any, fc: Any, stages: Any, blocks: Any, table: Any,
               partials: dict[str, list[dict[str, Any]]], timing: dict[str, float], world: Any, facts: Any) -> Any:
    """One suite's fill (its columns, into ``table``), checks and summary (rank 0; None elsewhere). ``unit``
    names its resume-cache stages (a re-run with a stronger plan has its own)."""
    name = suite.name
    from audit.engine.progress import phase_of

    t = time.perf_counter()
    if suite.fill is not None:
        cols, meta, partials[name] = stages.run(
            unit, blocks, lambda pos, _task, rows: suite.fill(fc, plan, pos, rows), dense=True, table=table)
        table.update(cols, meta)
        timing[f"{name}.fill_s"] = timing.get(f"{name}.fill_s", 0.0) + time.perf_counter() - t
    if suite.fill_checks is not None and suite.check_tasks is not None:
        t1 = time.perf_counter()
        tasks = suite.check_tasks(table, plan)
        with phase_of(fc.progress, f"{name}: validity checks ({len(tasks)} task(s))"):
            cols, meta, partials[f"{name}.checks"] = stages.run(
                f"{unit}.checks", tasks, lambda pos, task, rows: suite.fill_checks(fc, plan, pos, rows, task),
                dense=False, table=table)
        table.update(cols, meta)
        timing[f"{name}.checks_s"] = timing.get(f"{name}.checks_s", 0.0) + time.perf_counter() - t1
    t1 = time.perf_counter()
    with world.beating(f"summarising {name}"):  # the others may be waiting for rank 0 meanwhile
        result = suite.summarise(table, plan, facts, partials) if world.is_main else None
    timing[f"{name}.summarise_s"] = time.perf_counter() - t1
    return result


def make_facts(recipe: Recipe, data: Any, seed: int, batch_size: int) -> Any:
    from audit.attacks.threat import feature_facts
    from audit.suites import Facts

    m = recipe.section("model")
    k = int(m["num_classes"])
    return Facts(recipe=recipe, seed=seed, num_classes=k,
                 class_names=list(m["class_names"]) if m["class_names"] else [str(i) for i in range(k)],
                 input_bounds=tuple(m["input_bounds"]) if m["input_bounds"] else None,
                 input_shape=tuple(data.x.shape[1:]),
                 input_absmax=float(max(data.x.max(), -data.x.min())) if data.x.size else 0.0,  # no |x| copy
                 n=len(data), attributes=list(data.groups), categories={a: list(c) for a, (_, c) in data.groups.items()},
                 index=data.index, batch_size=batch_size,
                 features=feature_facts(recipe.section("data"), data.x, data.feature_names, data.meta))


def cache_key(recipe: Recipe, loaded: Any, data: Any, seed: int, block: int, batch_size: int, device: Any
              ) -> dict[str, Any]:
    """What every cached row depends on (``audit.engine.cache``): the model (its weights and its factory's
    source), the data, the recipe, the seed, the blocks, the batch size, the device and the libraries
    that compute rows. Gates, [validity] and the rank timeout change no row, so they are left out:
    re-gating or a longer timeout resumes."""
    import hashlib
    import inspect

    import torch

    from audit import __version__
    from audit.engine.shard import RULE

    sections = {k: v for k, v in recipe.sections.items() if k != "validity"}
    sections["run"] = {k: v for k, v in sections.get("run", {}).items() if k != "rank_timeout"}
    # the file that defines the model's class (a `file.py:Name` or a `package.module:Name` factory alike):
    # editing it changes the rows as surely as new weights do
    try:
        source_file = inspect.getsourcefile(type(loaded.module))
        source = hashlib.sha256(Path(source_file).read_bytes()).hexdigest() if source_file else None
    except (OSError, TypeError):
        source = None
    # the installed distribution's version (what torchattacks.__version__ says) without importing it: a
    # suite that attacks nothing should not pay for the import
    from importlib import metadata

    try:
        ta: str | None = metadata.version("torchattacks")
    except metadata.PackageNotFoundError:
        ta = None
    dev: dict[str, Any] = {"type": device.type}
    if device.type == "cuda":
        dev.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return {"tool": __version__, "torch": torch.__version__, "torchattacks": ta, "model_sha256": loaded.sha256,
            "model_factory_sha256": source, "data_sha256": data.meta.get("sha256"), "recipe": sections,
            "seed": seed, "sharding": RULE, "block_rows": block, "batch_size": batch_size, "device": dev}


def _notice(line: str) -> None:
    """The cache's one-line notices (an entry recomputed, a cache of another audit ignored): always shown."""
    print(f"audit: notice: {line}", file=sys.stderr, flush=True)


class _Stages:
    """Runs one unit of fill work over its items (blocks of rows, or a suite's check tasks: rows and what
    to do with them): this rank's share (``audit.engine.shard.owners``), each item from the cache when it
    is there, else computed and cached; then every rank's parts, merged, on every rank."""

    def __init__(self, world: Any, cache: Any, quiet: bool, n: int):
        self.world, self.cache, self.quiet, self.n = world, cache, quiet, n
        # over every rank, per unit: rows of blocks and check tasks, read back or computed (provenance.resume)
        self.counts: dict[str, dict[str, int]] = {"resumed_rows": {}, "computed_rows": {}, "resumed_tasks": {},
                                                  "computed_tasks": {}}

    def run(self, unit: str, items: list[Any], compute: Any, dense: bool, table: Any = None
            ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """``items``: positions arrays (a task of None) or (positions, task) pairs; ``compute(positions,
        task, rows) -> Part``, where ``rows`` is ``table`` at those positions (None without a table): what
        ``compute`` reads besides the data; its digest goes into each cache entry, so a part computed from
        other rows is never read back."""
        from audit.engine.cache import fill_cached, rows_digest
        from audit.engine.shard import owners
        from audit.engine.table import Merger

        items = [it if isinstance(it, tuple) else (it, None) for it in items]
        costs = [float(t["cost"]) for _, t in items] if items and all(
            isinstance(t, dict) and "cost" in t for _, t in items) else None
        owner = owners(len(items), self.world.size, costs)
        mine: dict[int, Any] = {}
        resumed = resumed_rows = 0
        for i, (pos, task) in enumerate(items):
            if owner[i] != self.world.rank:
                continue
            self.world.beat(f"{unit} {'block' if dense else 'task'} {i}", force=True)
            rows = None if table is None else table.take(pos)
            part, was_cached = fill_cached(self.cache, unit, i, lambda pos=pos, task=task, rows=rows:
                                           compute(pos, task, rows), rows_digest(pos, task, rows))
            resumed += was_cached
            resumed_rows += len(pos) if was_cached else 0
            mine[i] = part
        # in item order, whoever computed them: the table's columns come out in the same order for any world
        # size; one part in flight at a time
        merger = Merger(self.n, dense)
        self.world.stream(unit, owner, mine, merger.add)
        counts = self.world.allgather_object((resumed, resumed_rows), f"{unit} counts")
        n_resumed = sum(c[0] for c in counts)
        total_rows = sum(len(p) for p, _ in items)
        if dense:
            back = sum(c[1] for c in counts)
            self.counts["resumed_rows"][unit], self.counts["computed_rows"][unit] = back, total_rows - back
        else:  # check tasks share rows: count tasks
            self.counts["resumed_tasks"][unit], self.counts["computed_tasks"][unit] = n_resumed, len(items) - n_resumed
        if n_resumed and not self.quiet:
            what = f"{back} of {total_rows} rows" if dense else f"{n_resumed} of {len(items)} tasks"
            print(f"audit: {unit}: {what} resumed from {self.cache.root}", file=sys.stderr, flush=True)
        return merger.done()


def core_fill(model: Any, data: Any, positions: np.ndarray, device: Any, batch_size: int) -> Any:
    """The clean pass over these rows: logits, and for rows among the first 1024 of the data a second pass
    (inference_deterministic compares them: the largest |logit difference| per row)."""
    from audit.engine.inference import predict_logits
    from audit.engine.shard import take
    from audit.engine.table import Part

    logits = predict_logits(model, take(data.x, positions), device, batch_size)
    diff = np.full(len(positions), np.nan)
    again = positions < REPEAT_ROWS  # independent of batch size and sharding, so the report is too
    if again.any():
        second = predict_logits(model, take(data.x, positions[again]), device, batch_size)
        d = np.abs(second.astype(np.float64) - logits[again].astype(np.float64)).max(axis=1)
        # bitwise: a NaN (impossible after _require_finite) or any difference counts
        d[np.any(second != logits[again], axis=1) & (d == 0)] = np.finfo(np.float64).tiny
        diff[again] = d
        flips = second.argmax(1) != logits[again].argmax(1)
    cols = {"logits": logits.astype(np.float32), "check:repeat_max_diff": diff,
            "check:repeat_flip": np.zeros(len(positions), dtype=bool)}
    if again.any():
        cols["check:repeat_flip"][again] = flips
    return Part(positions, cols, {"check:repeat_max_diff": {"kind": "check", "rows": f"the first {REPEAT_ROWS}"}})


REPEAT_ROWS = 1024


def build_core_table(data: Any, logits: np.ndarray, cols: dict[str, np.ndarray]) -> Any:
    from audit.engine.inference import build_table

    table = build_table(data, logits)
    for k in ("check:repeat_max_diff", "check:repeat_flip"):
        table.add(k, cols[k], {"kind": "check"})
    return table


def _require_finite(logits: np.ndarray, index: np.ndarray) -> None:
    """No metric means anything on NaN or infinite outputs (an overflowing softmax reads as perfectly
    calibrated, NaN breaks every sort): stop with one line, before any suite runs."""
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:3]
        kinds = [k for k, has in (("NaN", np.isnan(logits).any()), ("infinite", np.isinf(logits).any())) if has]
        raise InvalidEvaluation(
            f"the model outputs {' and '.join(kinds)} logits for {int(bad.sum())} of {len(logits)} examples "
            f"(example index {', '.join(str(int(index[i])) for i in first)}{', ...' if bad.sum() > 3 else ''}): "
            "no metric can be computed from them. Check the weights for NaN and the logits for float32 overflow")


CORE_CHECK_IDS = ("logits_not_probabilities", "inference_deterministic", "trusted_checkpoint",
                  "one_hot_categories_pinned", "better_than_baseline")


def core_validity_checks(logits: np.ndarray, repeat_diff: np.ndarray, needs_logits: list[str],
                         flips: np.ndarray | None = None) -> tuple[list[Check], np.ndarray]:
    """Checks of the evaluation that every suite relies on, from the clean pass's columns. Returns the
    checks and the logits to use: when the model outputs probabilities, their logarithm (so the table's
    softmax gives them back instead of squashing them a second time)."""
    from audit.engine.inference import looks_like_log_probabilities, looks_like_probabilities

    checks = []
    if looks_like_probabilities(logits):
        status = "fail" if needs_logits else "warn"
        consequence = (f"The {', '.join(needs_logits)} suite needs logits: a softmax flattens input gradients, which "
                       "makes a model look robust. Remove the final softmax, or downgrade this check in [validity]."
                       if needs_logits else
                       "Attacks would need logits; for the metrics here the outputs are used as probabilities "
                       "(their logarithm serves as logits, so they are not squashed twice).")
        checks.append(Check(
            "logits_not_probabilities", status,
            "The model's outputs are probabilities (every row is in [0, 1] and sums to 1): it ends in a softmax. "
            + consequence))
        with np.errstate(divide="ignore"):
            logits = np.log(np.clip(logits.astype(np.float64), 1e-45, None)).astype(np.float32)
    elif looks_like_log_probabilities(logits):
        checks.append(Check("logits_not_probabilities", "pass",
                            "The outputs are log-probabilities (log_softmax): usable as logits."))
    else:
        checks.append(Check("logits_not_probabilities", "pass", "The model outputs logits (rows do not sum to 1)."))
    # A second pass over the first rows: bitwise equal logits, or inference is random (dropout left on, ...).
    done = np.isfinite(repeat_diff)
    m = int(done.sum())
    diff = float(repeat_diff[done].max()) if m else 0.0
    if m == 0 or not (repeat_diff[done] > 0).any():
        checks.append(Check("inference_deterministic", "pass",
                            f"Two inference passes over {m} examples gave bitwise identical logits.", value=0.0))
    else:
        n_flips = int(flips.sum()) if flips is not None else 0
        checks.append(Check(
            "inference_deterministic", "fail",
            f"Two inference passes over the same {m} examples differ (max |delta logit| = {diff:.3g}, "
            f"{n_flips} predictions flipped): the model is random at inference (dropout in train mode, sampling, "
            "nondeterministic kernels). Every number in this report would change from run to run; make inference "
            "deterministic, or downgrade this check in [validity].", value=diff))
    return checks, logits
