"""buildbot: run Huawei Cloud CodeArts Build tasks from Slack and follow them in a thread."""
