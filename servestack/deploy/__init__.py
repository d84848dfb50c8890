"""The deploy loop: try ranked candidates through an engine until one is up and answering.

loop.py walks the candidates (`Fallback`); failures.py classifies an attempt's errors and says
what they rule out; journal.py keeps typed records of runs, attempts and stacks on disk;
lock.py keeps two commands off one service, per user, wherever they run; readiness.py probes
the endpoint; clock.py is the time they all take;
destroy.py cleans a stack and proves it empty, and is `servestack destroy`; outcome.py is how a
run ended (status, exit code, JSON report).

Not here: the engines (servestack.pulumi.engine, servestack.terraform.engine, behind
servestack.engine), per-cloud facts (servestack.clouds), the command line (servestack.cli).
"""
