"""Loopback stand-ins for the Slack Web API and for Huawei Cloud CodeArts Build and IAM.

Small HTTP servers on ``127.0.0.1`` that answer with the shapes the real APIs document, so
the real bot can be run, tested and measured with no workspace and no cloud account. They
are used by ``python -m bot demo``, the tests and the benchmarks; the production path
(``python -m bot`` / ``run``) never imports them.
"""
