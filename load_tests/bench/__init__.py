"""``make bench``: the same Locust load against every contender, on every model profile.

Profiles (``load_tests/profiles.py``): ``default`` (the pipeline's champion, 30 numeric
features), ``categorical`` (20 features, 6 of them text, missing values) and ``heavy``
(1,500 trees of depth 8, 10 classes); the last two are built by the benchmark itself from
data that ships with scikit-learn, and cached.

Contenders (each started here, one process serving, then stopped), on every profile:

1. ``batched``   - this service (``bentoml serve service:Tabserve``), adaptive batching;
2. ``unbatched`` - the same service, batching off (``baselines/unbatched_service.py``);
3. ``fastapi``   - a plain FastAPI + PyJWT + Pydantic app written independently of tabserve,
   pandas frame into the booster (``load_tests/baselines/fastapi_app.py``);
4. ``fastapi-tabserve`` - FastAPI + uvicorn doing tabserve's own per-request work (its
   validator, JWT check and code-matrix encoding) without BentoML
   (``load_tests/baselines/fastapi_tabserve_app.py``): what BentoML costs or buys;
5. ``mlflow``    - ``mlflow models serve`` of the same model logged as the pipeline's pyfunc
   (no auth: it has none);
6. ``constant``  - a trivial ASGI app answering a constant: the ceiling of this load
   generator on this machine;
7. ``drift-off`` - (1) with ``TABSERVE_DRIFT_ENABLED=false``, on the default profile only:
   what the live drift window costs;
8. ``recording`` - (1) with the served-rows record on (``TABSERVE_RECORD_URL``, a SQLite
   file, as ``make serve`` runs it), on the default profile only: what recording costs;
9. ``shadow`` - (8) and a shadow model (``TABSERVE_SHADOW_MODEL``: the profile's model
   again, a challenger of the same cost), on the default profile only; it also runs one
   user after the burst, for its p50 against ``batched``'s.

Two more run only when named in ``--only``, on the default profile: ``access-log-all``
(``TABSERVE_ACCESS_LOG=all``) and ``tracing-on`` (``OTEL_SDK_DISABLED=false``, no
exporter): what the production defaults save. ``shared-batcher`` runs only when named,
on every profile: tabserve whose HTTP workers send the model call to one batching model
process (``baselines/shared_batcher_service.py``), so that the batches of two workers
are as large as one's; its rows per model call are the model process's. ``--against REV`` adds
``batched@REV``, the batched service as of git revision REV (served from a temporary
worktree with this environment), on every profile: what a change costs or saves,
measured side by side.

Each contender runs every level of concurrent users; ``batched`` and ``unbatched`` then
run one user right after the heaviest level ("after burst": does adaptive batching keep
waiting once the load is gone?). On the ``heavy`` profile they also run the first level
with single-row requests only (``SINGLE_ROWS``): a batch request of 10 to 100 rows
already amortises its model call, so the mixed load bounds what batching can buy there.
``--repeat N`` runs the whole round N times, contenders
interleaved (every other round in reverse order, so that no contender always runs before
another), so that every ratio is measured side by side N times; the report gives medians
and the spread.

Then a **login flood** scenario (``flood``; ``load_tests/flood.py``) on the default
profile: the batched service, with the production argon2 parameters, takes 400 wrong
logins with random user names, 80 at a time, while four clients send authenticated
single-row predictions; the p99 of those predictions is reported beside the p99 of the
same prediction load alone. The flood comes once from one client, then from 400
(``X-Forwarded-For`` through a trusted proxy), so that every login reaches argon2.

Every contender runs one worker process, the server pinned to CPU 0 and Locust to CPU 1
(``taskset``) when the machine has two cores or more. ``--workers 2``: two worker
processes each, nothing pinned (Locust shares the cores). ``--workers 1,2``: both, side
by side in every round (the worker counts alternate like the contenders), and the report
sets each ratio with two workers beside the same ratio with one. For each number of
concurrent users, Locust runs headless with zero think time (a closed loop at full
speed); statistics are reset once every user has logged in and warmed up, so logins
(argon2) are not measured. Results:
``load_tests/results/report.md``, Plotly charts ``throughput.html`` and ``latency.html``,
and per run Locust's CSV and HTML report.

This package is plain Python: Locust (gevent) only ever runs as a subprocess. ::

    python -m load_tests.bench            # 3 profiles × 6 contenders, 32 and 64 users, 3 rounds
    python -m load_tests.bench --quick    # 1 round, 32 users, 8 s per level
    python -m load_tests.bench --profiles heavy --only batched,unbatched --users 32
"""
